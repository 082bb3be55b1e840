-- 0009: The streamer's time zone and the hour their day starts, chosen in the browser (at setup
-- and in Settings). One row; when present it overrides [general] timezone and day_start_hour for
-- the dashboard, so nobody has to edit config.toml and restart to see their own clock.

CREATE TABLE web_preferences (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    timezone text NOT NULL,
    day_start_hour integer NOT NULL CHECK (day_start_hour BETWEEN 0 AND 23),
    updated_at timestamptz NOT NULL DEFAULT now()
);

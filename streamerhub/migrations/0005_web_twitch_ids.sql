-- 0005: Dashboard users signed in with Twitch are matched by Twitch user id, which never
-- changes, not by login name, which can be changed and later taken by someone else. A user added
-- by login is bound to the id of the first account that signs in under that name.

ALTER TABLE web_users ADD COLUMN twitch_user_id text UNIQUE;

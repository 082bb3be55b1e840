"""Media library, stream jobs, argv builder, FFmpeg process supervision, progress parsing."""

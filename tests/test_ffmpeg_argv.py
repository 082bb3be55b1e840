def test_send_buffer_holds_about_a_second_of_the_stream() -> None:
    from streamerhub.ffmpeg.policy import send_buffer_for

    # A smaller buffer makes a frozen ingest stop FFmpeg's progress (and so be detected) sooner.
    assert send_buffer_for(2660) == 2660 * 1000 // 8  # the default profile: ~332 KB
    assert send_buffer_for(300) == 64 * 1024  # floor: small streams still flow
    assert send_buffer_for(6160) == 512 * 1024  # ceiling for 1080p60 bitrates
    assert send_buffer_for(None) == 512 * 1024  # unknown rate: the old bound

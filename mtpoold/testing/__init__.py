"""Test helpers shipped with mtpoold: a loopback MTProto DC and local proxies (like ``trio.testing``)."""

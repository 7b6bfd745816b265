"""The public surface is deliberate: exactly these names, each defined in a private module."""

import mtpoold
import mtpoold.testing


def test_public_names_are_exactly_the_documented_surface() -> None:
    public = {name for name in dir(mtpoold) if not name.startswith("_")} - {"testing"}
    assert public == set(mtpoold.__all__) - {"__version__"}


def test_public_names_come_from_private_modules() -> None:
    for name in mtpoold.__all__:
        if name == "__version__":
            continue
        module = getattr(mtpoold, name).__module__
        assert module.startswith("mtpoold._"), (name, module)


def test_testing_exports_the_loopback_dc_and_proxies() -> None:
    for name in ("open_dc", "open_proxy", "default_world", "load_world"):
        assert callable(getattr(mtpoold.testing, name))


def test_testing_exports_the_misbehaving_relay_and_mtproxy() -> None:
    for name in ("open_relay", "open_mtproxy"):
        assert callable(getattr(mtpoold.testing, name))
    for name in ("Relay", "RelayConnection", "MTProxy"):
        assert isinstance(getattr(mtpoold.testing, name), type)


def test_what_the_public_api_raises_or_returns_is_exported() -> None:
    """`open_pool` raises SessionLocked, `Pool.reload` returns a ReloadSummary; jobs return
    JobResult/JobMeta and raise JobFailed; statistics() returns PoolStatistics."""
    from mtpoold._pool import ReloadSummary
    from mtpoold._sessionlock import SessionLocked

    assert mtpoold.SessionLocked is SessionLocked
    assert issubclass(mtpoold.SessionLocked, mtpoold.MtpooldError)
    assert mtpoold.ReloadSummary is ReloadSummary
    for name in ("JobResult", "JobMeta", "JobFailed", "PoolStatistics", "ConfigError"):
        assert name in mtpoold.__all__

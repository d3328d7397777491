"""jaxformer.cache.cache_dir: $JAXFORMER_CACHE_DIR over $XDG_CACHE_HOME over ~/.cache."""

from jaxformer import cache


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JAXFORMER_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "jaxformer"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "jaxformer"
    monkeypatch.setenv("JAXFORMER_CACHE_DIR", str(tmp_path / "ours"))
    assert cache.cache_dir() == tmp_path / "ours"  # used as is, no "jaxformer" appended


def test_empty_variables_count_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JAXFORMER_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache.cache_dir() == tmp_path / ".cache" / "jaxformer"

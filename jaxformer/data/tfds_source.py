"""tensorflow-datasets splits as `Table`s: a dataset built by tfds (online, or from the files it
asks for in a manual_dir) and read as array_record, without TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Mapping
from urllib.parse import urlparse

from jaxformer.data.sources import DataError, Table, _plain

_PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")
# The packages of tfds' own dataset builders, as tensorflow_datasets/__init__.py imports them.
_TFDS_CATEGORIES = (
    "audio graphs image image_classification object_detection nearest_neighbors "
    "question_answering d4rl ranking recommendation rl_unplugged robotics robomimic structured "
    "summarization text text_simplification time_series translate video vision_language"
).split()
_LOCAL_FILES_HINT = "pass local files with --config.data.train_file=... or a manual_dir"


def from_tfds(
    name: str,
    split: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    *,
    missing_ok: bool = False,
) -> Table | None:
    """The rows of a tensorflow-datasets split (e.g. "glue/sst2", "train"), built in data_dir
    (tfds' default without one) if it is not there yet, from manual_dir where the dataset needs
    its files there, and read as array_record (no TensorFlow).

    bytes are decoded as UTF-8 (invalid bytes replaced); ClassLabel values stay ints, with their
    class names in `label_names`. Without network a build fails at once with a DataError.
    A split the dataset does not have is a DataError, or None with `missing_ok`.
    """
    import tensorflow_datasets as tfds

    try:
        try:
            builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        except tfds.core.registered.DatasetNotFoundError:
            _register_tfds_builders()
            builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            _fail_fast_downloads(builder)
            builder.download_and_prepare(
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
            )
    except Exception as e:
        raise DataError(f"tfds could not build {name} ({_reason(e)}): {_LOCAL_FILES_HINT}") from e
    where = f"tfds {name} {split}"
    if missing_ok and split not in builder.info.splits:
        return None
    file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
    if file_format not in (None, "array_record"):
        raise DataError(
            f"tfds {name} in {builder.data_dir} is built as {file_format}, which needs "
            "TensorFlow to read; build it again as array_record in another data_dir"
        )
    try:
        source = builder.as_data_source(split=split)
    except Exception as e:
        raise DataError(
            f"{where} cannot be read ({_reason(e)}); pick one of its splits "
            f"{sorted(builder.info.splits)}, e.g. {sorted(builder.info.splits)[0]!r}"
        ) from e
    records = source.__getitems__(range(len(source))) if len(source) else []
    if not records:
        raise DataError(f"{where} has no rows")
    keys = list(records[0])
    columns = {key: [_plain(r[key], decode_bytes=True) for r in records] for key in keys}
    label_names = {}  # of ClassLabel features, and of sequences of them (e.g. conll2003's ner)
    for key, feature in builder.info.features.items():
        for f in (getattr(feature, "feature", None), feature):
            if isinstance(f, tfds.features.ClassLabel):
                label_names[key] = list(f.names)
    return Table(
        where, columns, [(where, i + 1) for i in range(len(records))], label_names=label_names
    )


def _register_tfds_builders() -> None:
    """Imports tfds' dataset categories: `import tensorflow_datasets` without TensorFlow leaves
    them unimported, so builders such as glue are not registered until then."""
    for category in _TFDS_CATEGORIES:
        try:
            importlib.import_module(f"tensorflow_datasets.{category}")
        except Exception:  # a category whose optional dependencies are missing
            continue


def _reason(e: BaseException) -> str:
    """The first line of an exception's message, with its type, shortened."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    reason = f"{type(e).__name__}: {lines[0].strip() if lines else ''}"
    return reason if len(reason) <= 300 else reason[:297] + "..."


def _fail_fast_downloads(builder) -> None:
    """Makes the builder's downloads fail at once when a URL's host does not resolve (and no
    proxy is set); tfds would otherwise retry each download for minutes."""
    make = getattr(builder, "_make_download_manager", None)
    if make is None or any(os.environ.get(v) for v in _PROXY_VARS):
        return

    def make_checked(*args, **kwargs):
        manager = make(*args, **kwargs)
        for method in ("download", "download_and_extract"):
            original = getattr(manager, method)

            def checked(url_or_urls, *a, _original=original, **k):
                _check_hosts(url_or_urls)
                return _original(url_or_urls, *a, **k)

            setattr(manager, method, checked)
        return manager

    # An instance attribute: the builder's class stays tfds' own.
    builder._make_download_manager = make_checked


def _urls(tree):
    if isinstance(tree, (Mapping, list, tuple)):
        for value in tree.values() if isinstance(tree, Mapping) else tree:
            yield from _urls(value)
    elif isinstance(url := getattr(tree, "url", tree), str):  # a tfds Resource or a str
        yield url


def _check_hosts(url_or_urls) -> None:
    for host in {urlparse(url).hostname for url in _urls(url_or_urls)} - {None}:
        try:
            socket.getaddrinfo(host, 443)
        except OSError as e:
            raise ConnectionError(f"{host} does not resolve ({e})") from e

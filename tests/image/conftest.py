"""Fixtures of the image tests: the image built once per session (cached across sessions by the
build script), and a working container of it."""

from __future__ import annotations

import pytest

from .container import Container, Image, why_buildah_cannot_run


@pytest.fixture(scope="session")
def image(request) -> Image:
    reason = why_buildah_cannot_run()
    if reason:
        pytest.skip(f"image tests skipped: {reason}")
    built = Image.build()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"\nimage {built.name}: {built.size}, {built.layers} layers, "
            f"build step {built.build_seconds:.1f} s (cached when the content hash is unchanged)")
    return built


@pytest.fixture(scope="session")
def container(image) -> Container:
    box = Container(image)
    try:
        yield box
    finally:
        box.close()

"""napari-segkit: every common way of segmenting an image, one click away in napari."""


def _find_version() -> str:
    """The package version: from git tags at build time, else installed metadata, else a fallback.

    A build (wheel, sdist or editable install) writes ``_version.py`` from the git tag through
    hatch-vcs. Without that file (a source tree on ``sys.path``, never built), the installed
    distribution's metadata is used; without either, ``0+unknown`` (a valid PEP 440 version that
    says it is not known).
    """
    try:
        from ._version import version
    except ImportError:
        pass
    else:
        return str(version)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("napari-segkit")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _find_version()

# SPDX-License-Identifier: BSD-3-Clause
"""`writeMaskedImage`: a `~psfmatch.image.MaskedImage` as an LSST MaskedImage FITS file,
written atomically; `_writingTogether`: several files that land together or not at all."""

from __future__ import annotations

import bz2
import contextlib
import contextvars
import dataclasses
import datetime
import gzip
import io
import logging
import os
import signal
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from astropy.io import fits

from .._logcapture import _capturedWarnings
from .._version import __version__
from ..errors import InvalidInputError, OutputExistsError, PsfMatchError, PsfMatchIOError
from ..image import Mask, MaskedImage
from ..task import TaskMetadata
from .fitsdata import _BLOCK, _writeImage
from .headers import _cardKey, _isStructural, metadataToHeader
from .layouts import _warningMessages
from .paths import _asPath

_log = logging.getLogger("psfmatch.io")

_VERSION_KEY = "PSFMVER"
"""Primary-header keyword of every file psfmatch writes: the version of psfmatch that wrote it.

`psfmatch.batch` recognises its own outputs by it. (The ``HIERARCH psfmatch.__version__``
card among the metadata is not psfmatch's version: it is lsst-utils' ``timeMethod`` marking
the format of its timing entries, always 1.)"""


def _primaryHeader(header: Any) -> fits.Header:
    if header is None:
        source = fits.Header()
    elif isinstance(header, fits.Header):
        source = header
    elif isinstance(header, TaskMetadata | Mapping):
        source = metadataToHeader(header)
    else:
        raise InvalidInputError(
            f"header: expected an astropy Header, a TaskMetadata or a dict, got "
            f"{type(header).__name__}"
        )
    result = fits.Header()
    result[_VERSION_KEY] = (__version__, "psfmatch version")
    for card in source.cards:
        keyword = card.keyword.upper()
        if keyword in ("EXTNAME", "EXTTYPE", "EXTVER", _VERSION_KEY) or _isStructural(keyword):
            continue
        # A new card, so the caller's header never shares (or sees) one with the file's.
        result.append(fits.Card.fromstring(card.image), end=True)
    return result


def _planeHeader(role: str, xy0: tuple[int, int], wcs: fits.Header | None = None) -> fits.Header:
    x0, y0 = xy0
    header = fits.Header() if wcs is None else wcs.copy()
    header["EXTTYPE"] = role
    header["EXTNAME"] = role
    header["INHERIT"] = (True, "inherit the primary header")
    for axis, origin in ((1, x0), (2, y0)):
        header[f"CTYPE{axis}A"] = ("LINEAR", "parent pixel coordinates (xy0)")
        header[f"CRPIX{axis}A"] = 1
        header[f"CRVAL{axis}A"] = origin
        header[f"CUNIT{axis}A"] = "PIXEL"
    header["WCSNAMEA"] = "PARENT"
    header["LTV1"] = (-x0, "-x0: IRAF physical-to-image offset")
    header["LTV2"] = (-y0, "-y0: IRAF physical-to-image offset")
    return header


def _readOnly(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``.

    The planes' HDUs are astropy's only for their headers (`fitsdata._writeImage` writes the
    data), but astropy byte-swaps a writeable little-endian array in place when it does
    touch the data (to write or checksum it): read-only, the caller's arrays cannot change
    even for a moment.
    """
    view = array.view()
    view.flags.writeable = False
    return view


def _nativePlane(array: np.ndarray, dtype: Any = None) -> np.ndarray:
    """A read-only C-contiguous native-byte-order ``array`` (of ``dtype``), as
    `fitsdata._writeImage` takes it: a view of ``array`` if it is one already (as
    `MaskedImage` stores its planes), else a copy (a plane replaced by, say, a FITS HDU's
    big-endian data)."""
    a = np.asarray(array)
    return _readOnly(np.ascontiguousarray(a, dtype=np.dtype(dtype or a.dtype).newbyteorder("=")))


def _maskPlane(
    maskedImage: MaskedImage, wcs: fits.Header | None = None
) -> tuple[fits.ImageHDU, np.ndarray]:
    header = _planeHeader("MASK", maskedImage.getXY0(), wcs)
    for name, bit in Mask.getMaskPlaneDict().items():
        header[_cardKey(f"MP_{name}")] = bit
    mask = _nativePlane(maskedImage.mask, np.int32)
    bits = mask.view(np.uint32)
    used = int(np.bitwise_or.reduce(bits, axis=None)) if bits.size else 0
    # uint16 (stored int16 + BZERO) as the reference writes it when every set bit fits;
    # otherwise int32, whose bit pattern is the psfmatch mask itself.
    data = bits.astype(np.uint16) if used < (1 << 16) else mask
    return fits.ImageHDU(data, header=header, uint=True), data


def _wcsCards(wcs: Any) -> fits.Header | None:
    """The FITS cards of a celestial WCS (SIP and other distortions included), or None."""
    if wcs is None:
        return None
    if isinstance(wcs, fits.Header):
        return wcs.copy()
    to_header = getattr(wcs, "to_header", None)
    if to_header is None:
        raise InvalidInputError(
            f"wcs: expected an astropy WCS or a FITS header, got {type(wcs).__name__}"
        )
    with _capturedWarnings():
        # astropy notes that relax=True writes non-standard (SIP) keywords: that is the point.
        cards = to_header(relax=True)
    return fits.Header(cards)


def _planes(maskedImage: MaskedImage, wcs: Any = None) -> list[tuple[fits.ImageHDU, np.ndarray]]:
    """The image, mask and variance HDUs (headers only: `fitsdata._writeImage` writes the
    data), each with the array it stores; with ``wcs``, its cards in each header."""
    xy0 = maskedImage.getXY0()
    cards = _wcsCards(wcs)
    image = _nativePlane(maskedImage.image)
    variance = _nativePlane(maskedImage.variance)
    return [
        (fits.ImageHDU(image, header=_planeHeader("IMAGE", xy0, cards)), image),
        _maskPlane(maskedImage, cards),
        (fits.ImageHDU(variance, header=_planeHeader("VARIANCE", xy0, cards)), variance),
    ]


def _otherHdus(header: Any, extraHdus: Iterable[Any]) -> fits.HDUList:
    """The primary HDU and copies of the extra HDUs: what astropy writes."""
    hdus: list[Any] = [fits.PrimaryHDU(header=_primaryHeader(header))]
    if isinstance(extraHdus, fits.hdu.base.ExtensionHDU | fits.PrimaryHDU):
        extraHdus = [extraHdus]
    for index, extra in enumerate(extraHdus):
        if isinstance(extra, fits.PrimaryHDU) or not isinstance(extra, fits.hdu.base.ExtensionHDU):
            raise InvalidInputError(
                f"extraHdus[{index}]: expected an extension HDU (ImageHDU, BinTableHDU, ...), got "
                f"{type(extra).__name__}"
            )
        # A copy, so that assembling the file never touches the caller's HDU.
        hdus.append(extra.copy())
    return fits.HDUList(hdus)


def _primaryLength(data: Any) -> int:
    """The length in bytes of a file's primary HDU that has no data: its header's blocks."""
    view = memoryview(data)
    for offset in range(0, len(view), 80):
        if view[offset : offset + 8].tobytes() == b"END     ":
            return -(-(offset + 80) // _BLOCK) * _BLOCK
    raise PsfMatchError("astropy wrote a primary header without an END card")


def _writeFile(
    stream: BinaryIO, planes: list[tuple[fits.ImageHDU, np.ndarray]], others: fits.HDUList
) -> None:
    """The primary HDU, the three planes, the extra HDUs, each with its checksums.

    astropy writes the primary and the extra HDUs (small) into memory; the planes' data go from
    their arrays to the file a block at a time (`fitsdata._writeImage`), without the whole
    byte-swapped copies astropy makes of read-only arrays, one for the checksum and one for the
    file.
    """
    small = io.BytesIO()
    others.writeto(small, checksum=True, output_verify="exception")
    written = small.getbuffer()
    split = _primaryLength(written)
    stream.write(written[:split])
    when = datetime.datetime.now().isoformat()[:19]  # as astropy dates its checksum cards
    for hdu, array in planes:
        hdu.verify("exception")
        _writeImage(stream, hdu.header.copy(), array, when)
    stream.write(written[split:])


def _removeQuietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


_DEFERRED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def _signalsDeferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs, then act on them.

    Moving a set of files into place, or cleaning up after a failure, takes milliseconds but
    must not stop half-way: an interrupt there would leave half of a pair replaced. Python
    runs signal handlers in the main thread only, so only there is anything to hold back;
    each handler that was installed (a Python function, Python's own `KeyboardInterrupt`, or
    the default action) is run, or the signal raised again, when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for number in _DEFERRED_SIGNALS:
            handler = signal.getsignal(number)
            if handler is signal.SIG_IGN or handler is None:
                continue  # ignored, or installed outside Python: left alone
            # Noted before it is replaced: a signal between the two lines is restored below.
            previous[number] = handler
            signal.signal(number, lambda n, _frame: pending.append(n))
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(pending):
            handler = previous[number]
            if callable(handler):
                handler(number, None)  # Python's default_int_handler raises KeyboardInterrupt
            else:
                signal.raise_signal(number)  # SIG_DFL: what would have happened, now


@dataclasses.dataclass
class _Staged:
    """A file written to ``temporary``, to be moved to ``target``."""

    temporary: Path
    target: Path
    overwrite: bool
    description: str = ""


class _OutputGroup:
    """Files written to temporaries beside their targets and moved into place together.

    `commit` refuses before moving anything if a target appeared that may not be replaced;
    while it moves, signals are held back (`_signalsDeferred`); if a move fails, the files it
    already moved are moved back (a replaced file is restored from a hard link, or a rename,
    kept until the end). `discard` removes every temporary. Either way no temporary is left.
    """

    def __init__(self) -> None:
        self.staged: list[_Staged] = []
        self.cleanups: list[Callable[[], None]] = []

    def add(self, staged: _Staged) -> None:
        with _LIVE_LOCK:
            _LIVE.add(staged.temporary)
        self.staged.append(staged)

    def drop(self, staged: _Staged) -> None:
        with _signalsDeferred():
            _removeQuietly(staged.temporary)
            with _LIVE_LOCK:
                _LIVE.discard(staged.temporary)
            self.staged.remove(staged)

    def discard(self) -> None:
        with _signalsDeferred():
            self._removeTemporaries()
            self._cleanUp()

    def _removeTemporaries(self) -> None:
        for staged in self.staged:
            _removeQuietly(staged.temporary)
        with _LIVE_LOCK:
            _LIVE.difference_update(staged.temporary for staged in self.staged)

    def _cleanUp(self) -> None:
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(OSError):
                cleanup()

    def commit(self) -> None:
        with _signalsDeferred():
            moved: list[tuple[Path, Path | None]] = []
            try:
                for staged in self.staged:
                    if not staged.overwrite and os.path.lexists(staged.target):
                        raise _exists(staged.target)
                for staged in self.staged:
                    with _ioErrors(staged.target, "write"):
                        if not staged.target.parent.is_dir():
                            staged.target.parent.mkdir(parents=True)
                            self.cleanups.append(_rmdirIfEmpty(staged.target.parent))
                        backup = _keepOld(staged.target) if staged.overwrite else None
                        try:
                            _moveIntoPlace(staged.temporary, staged.target, staged.overwrite)
                        except BaseException:
                            if backup is not None:
                                _restore(backup, staged.target)
                            raise
                    moved.append((staged.target, backup))
            except BaseException:
                for target, backup in reversed(moved):
                    with contextlib.suppress(OSError):
                        if backup is None:
                            os.unlink(target)
                        else:
                            _restore(backup, target)
                self._removeTemporaries()
                self._cleanUp()
                raise
            for _, backup in moved:
                if backup is not None:
                    _removeQuietly(backup)
            self._removeTemporaries()  # the hard-linked ones; the others are gone already
            self._cleanUp()
        for staged in self.staged:
            _log.info("wrote %s%s", staged.target, staged.description)


def _rmdirIfEmpty(directory: Path) -> Callable[[], None]:
    """Removes ``directory`` (made by a commit) if it holds nothing, e.g. after a rollback."""

    def remove() -> None:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()

    return remove


def _exists(target: Path) -> OutputExistsError:
    return OutputExistsError(
        f"output file {str(target)!r} exists; pass overwrite=True to replace it", str(target)
    )


def _keepOld(target: Path) -> Path | None:
    """A second name for the file at ``target`` (None if there is none), so that it can be put
    back if the group fails later: a hard link, else (a file system without them) a rename."""
    if not os.path.lexists(target):
        return None
    backup = target.parent / f".{target.name}.{uuid.uuid4().hex}.old"
    try:
        os.link(target, backup)
    except OSError:
        os.rename(target, backup)
    return backup


def _restore(backup: Path, target: Path) -> None:
    """Put the old file kept by `_keepOld` back at ``target``."""
    if os.path.lexists(target) and os.path.samefile(backup, target):
        # Still the same file (the move failed before replacing it); rename() between two
        # links of one file does nothing and would leave the backup behind.
        os.unlink(backup)
    else:
        os.replace(backup, target)


_GROUP: contextvars.ContextVar[_OutputGroup | None] = contextvars.ContextVar(
    "psfmatchOutputGroup", default=None
)


@contextlib.contextmanager
def _writingTogether() -> Iterator[_OutputGroup]:
    """Every file `writeMaskedImage` (or `_stageFile`) writes in the block lands at its end,
    together with the others, or, if the block fails or is interrupted, none does: the old
    files stay as they were and no temporary is left.

    A block inside another joins the outer one. The group is per thread (a context variable).
    """
    outer = _GROUP.get()
    if outer is not None:
        yield outer
        return
    group = _OutputGroup()
    token = _GROUP.set(group)
    try:
        yield group
    except BaseException:
        group.discard()
        raise
    finally:
        _GROUP.reset(token)
    group.commit()


@contextlib.contextmanager
def _compressing(stream: Any, target: Path) -> Iterator[Any]:
    """``stream``, gzip- or bzip2-compressed when ``target`` ends in .gz or .bz2, as astropy
    does for such names: written through a temporary, the name did not reach astropy and
    'd.fits.gz' was an uncompressed file under a gzip name."""
    suffix = target.suffix.lower()
    if suffix == ".gz":
        with gzip.GzipFile(filename=target.stem, mode="wb", fileobj=stream) as packed:
            yield packed
    elif suffix == ".bz2":
        with bz2.BZ2File(stream, mode="wb") as packed:
            yield packed
    else:
        yield stream


def _stageFile(
    target: Path, write: Callable[[Path], None], overwrite: bool, description: str = ""
) -> None:
    """Write ``target`` by ``write(temporary)`` beside it: moved into place at once, or with
    the other files of the current `_writingTogether` block at its end."""
    with _writingTogether() as group:
        temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        staged = _Staged(temporary, target, overwrite, description)
        # Registered before it exists, so that whatever interrupts the write below, the
        # group's discard (or _removeLeftovers) finds it.
        group.add(staged)
        try:
            write(temporary)
        except BaseException:
            group.drop(staged)  # a caller that goes on must not commit half a file
            raise


_LIVE: set[Path] = set()
"""Temporaries of every `_OutputGroup` not yet committed or discarded (all threads)."""

_LIVE_LOCK = threading.Lock()


def _removeLeftovers() -> None:
    """Remove every temporary still registered: the command line's last word after an
    interrupt, which may have come between two statements of the code that would have."""
    with _signalsDeferred(), _LIVE_LOCK:
        for path in list(_LIVE):
            _removeQuietly(path)
        _LIVE.clear()


@contextlib.contextmanager
def _ioErrors(target: Path, action: str) -> Iterator[None]:
    try:
        yield
    except PsfMatchError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise PsfMatchIOError(f"cannot {action} {str(target)!r}: {reason}", str(target)) from err


def writeMaskedImage(
    path: str | os.PathLike[str],
    maskedImage: MaskedImage,
    *,
    header: fits.Header | TaskMetadata | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extraHdus: Iterable[Any] = (),
    wcs: Any = None,
) -> None:
    """Write a `~psfmatch.image.MaskedImage` as an LSST MaskedImage FITS file.

    Parameters
    ----------
    path : `str` or `os.PathLike`
        The output file.
    maskedImage : `~psfmatch.image.MaskedImage`
        The image to write; not modified.
    header : `astropy.io.fits.Header`, `~psfmatch.task.TaskMetadata` or `dict`, optional
        Cards for the primary HDU. Metadata and dicts go through `metadataToHeader`.
        Structural keywords (``SIMPLE``, ``BITPIX``, ``NAXISn``, ``EXTEND``, ``EXTNAME``, ...)
        are left out, and so is a ``PSFMVER`` card (see Notes).
    overwrite : `bool`, optional
        Replace an existing file.
    extraHdus : iterable of extension HDUs, optional
        Appended after the variance HDU, e.g. an `~astropy.io.fits.ImageHDU` of a kernel or a
        `~astropy.io.fits.BinTableHDU` of candidates. They are copied, not modified.
    wcs : `astropy.wcs.WCS` or `astropy.io.fits.Header`, optional
        The celestial WCS of the image's pixels, written into the ``IMAGE``, ``MASK`` and
        ``VARIANCE`` headers (``to_header(relax=True)``: SIP and other distortions included),
        beside the origin's ``A`` system.

    Raises
    ------
    InvalidInputError
        If ``maskedImage`` is not a `MaskedImage`, ``header`` or ``extraHdus`` has the wrong
        type, or metadata cannot become header cards.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    PsfMatchIOError
        If the file cannot be written (missing or unwritable directory, ``path`` is a
        directory, disk full, ...).

    Notes
    -----
    Layout: an empty primary HDU with ``PSFMVER``, the version of psfmatch that wrote the file
    (``psfmatch.__version__``), then the cards of ``header``; then ``IMAGE``, ``MASK`` and
    ``VARIANCE`` image extensions, each with ``EXTTYPE`` and ``EXTNAME`` naming it and ``xy0``
    both as the alternate linear WCS ``A`` (``CRVAL1A``/``CRVAL2A`` at ``CRPIX1A``/``CRPIX2A``
    = 1, ``CTYPEnA = 'LINEAR'``) and as ``LTV1``/``LTV2`` = ``-xy0``. The mask HDU has a
    ``MP_<PLANE>`` keyword for every plane of psfmatch's dictionary and is stored as 16-bit
    unsigned integers when every set bit fits, else 32-bit. Every HDU has ``CHECKSUM`` and
    ``DATASUM`` cards, which `readMaskedImage` verifies.

    The write is atomic: the file is written to a temporary file in the same directory and
    moved into place with `os.replace` (without ``overwrite``, hard-linked, which fails if the
    target appeared meanwhile), with SIGINT, SIGTERM and SIGHUP held back while it moves. A
    failure or an interrupt leaves neither a partial file nor the temporary one. Inside a
    `_writingTogether` block (`SubtractionResult.writeFits`, the command line) the file is
    moved into place with the block's other files at its end, or not at all.
    """
    target = _asPath(path, "path")
    if not isinstance(maskedImage, MaskedImage):
        raise InvalidInputError(
            f"maskedImage: expected a MaskedImage, got {type(maskedImage).__name__}"
        )
    if not isinstance(overwrite, bool):
        raise InvalidInputError(f"overwrite: expected a bool, got {overwrite!r}")
    planes = _planes(maskedImage, wcs)
    others = _otherHdus(header, extraHdus)
    if target.is_dir():
        raise PsfMatchIOError(f"cannot write {str(target)!r}: it is a directory", str(target))
    if not overwrite and os.path.lexists(target):
        raise OutputExistsError(
            f"output file {str(target)!r} exists; pass overwrite=True to replace it", str(target)
        )
    if target.is_symlink():
        # Written through the link, as cp and a shell's > do: moving the new file into place
        # replaced the link itself, leaving the file it named unchanged.
        target = Path(os.path.realpath(target))
    if target.exists() and not target.is_file():
        # A device, FIFO or socket (/dev/null, /dev/stdout, a named pipe): the atomic write
        # would replace it with a regular file (as root, the system's /dev/null).
        raise PsfMatchIOError(
            f"cannot write {str(target)!r}: it is not a regular file ({_fileKind(target)}); "
            "psfmatch writes a new file and moves it into place, which would replace it",
            str(target),
        )
    if not overwrite and os.path.lexists(target):
        raise OutputExistsError(
            f"output file {str(target)!r} exists; pass overwrite=True to replace it", str(target)
        )
    directory = target.parent
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise PsfMatchIOError(
            f"cannot write {str(target)!r}: {str(directory)!r} {problem}", str(target)
        )

    def write(temporary: Path) -> None:
        with _ioErrors(target, "write"):
            # O_EXCL: never reuse a file someone else made; mode 0o666 lets the umask decide
            # the final permissions, as for any newly created file.
            descriptor = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
        with _ioErrors(target, "write"), os.fdopen(descriptor, "wb") as stream:
            with _capturedWarnings() as caught:
                # Not expected (every card is built verified), but a warning from astropy
                # while writing is a diagnostic for the log, not for the caller.
                try:
                    with _compressing(stream, target) as out:
                        _writeFile(out, planes, others)
                except (ValueError, TypeError, fits.VerifyError) as err:
                    raise PsfMatchIOError(
                        f"cannot write {str(target)!r}: {type(err).__name__}: {err}",
                        str(target),
                    ) from err
            stream.flush()
            os.fsync(stream.fileno())
        for message in dict.fromkeys(_warningMessages(caught)):
            _log.warning("writing %s: %s", target, message)

    _stageFile(
        target,
        write,
        overwrite,
        f" ({maskedImage.getWidth()}x{maskedImage.getHeight()})",
    )


def _fileKind(path: Path) -> str:
    """What kind of file that is not a regular file or a directory ``path`` is."""
    mode = os.stat(path).st_mode
    for test, kind in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a special file"


def _moveIntoPlace(temporary: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, target)
        return
    try:
        # A hard link fails if the target exists, so a file created since the check above is
        # not clobbered.
        os.link(temporary, target)
    except FileExistsError as err:
        raise OutputExistsError(
            f"output file {str(target)!r} exists; pass overwrite=True to replace it", str(target)
        ) from err
    except OSError:
        # Hard links are not supported everywhere (some network and FUSE file systems).
        if os.path.lexists(target):
            raise OutputExistsError(
                f"output file {str(target)!r} exists; pass overwrite=True to replace it",
                str(target),
            ) from None
        os.replace(temporary, target)
        return
    _removeQuietly(temporary)

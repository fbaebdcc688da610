# SPDX-License-Identifier: BSD-3-Clause
"""Subtract many science/template pairs on a Dask cluster, resumably.

`subtractBatch` runs `psfmatch.subtract` and `SubtractionResult.writeFits` once per pair of a
pair list (a CSV file or a list of dicts, see `readPairs`) on a `dask.distributed` cluster: a
`~distributed.LocalCluster` on this machine by default, or any scheduler given by its address.
``psfmatch batch pairs.csv`` is the same from the command line.

Safety and resumption
---------------------
- Each output is written atomically (`psfmatch.io.writeMaskedImage`): a pair's files are
  either complete or absent, whatever happens to the worker. Missing output directories are
  created. With a ``matched`` column the convolved image is written first and the difference
  image last.
- Without ``overwrite``, a pair whose outputs all exist and are complete psfmatch files (the
  IMAGE, MASK and VARIANCE extensions, ``PSFMVER`` and ``KSUM`` in the primary header, and a
  file size that ends with the last HDU) is skipped, so a rerun does only the pairs that did
  not finish. A pair that is redone may replace its own complete psfmatch outputs (left by an
  interrupted run); any other existing file is an `OutputExistsError` for that pair.
- A failing pair does not stop the others. Every pair of every run appends one JSON line to the
  manifest (default ``psfmatch-batch.jsonl`` in the outputs' common directory; `readManifest`
  reads it): ``run``, ``index``, ``where`` (CSV line), ``science``, ``template``, ``output``,
  ``status`` (``ok``, ``skipped`` or ``failed``), ``errorType``, ``message``, ``traceback``,
  ``seconds``, ``time`` (UTC, ISO 8601), ``worker`` and ``templateCached``. The last line of an
  output is its state; with the outputs it tells exactly what succeeded.

Work and memory
---------------
Tasks are submitted lazily: at most ``maxInFlight`` (default two per worker thread) are on the
cluster at a time, and each returns a small record, never an image; the driver holds only the
pair list. A worker holds the pairs it is running (one per thread) and a small cache of
template analyses (kilobytes each). One pair of float32 images peaks at about 230 bytes per
pixel of one image (the inputs, their working copies, the convolved and difference images,
the detection and decorrelation FFT buffers; measured as the peak resident memory of
``subtract`` + ``writeFits``): 225 MB for 1024 × 1024, 0.9 GB for 2048 × 2048, so about
3.9 GB for a 4096 × 4096 CCD. Plan for ``threadsPerWorker`` times that per worker, plus the
worker's own ~130 MB. The default `~distributed.LocalCluster` has one thread per worker
process.

Shared templates
----------------
A template used by many science images is analysed once per worker process: the variance
rescaling factor and its sep detections for the difference-image association
(`ImagePsfMatchTask.analyzeTemplate`) are cached,
keyed by the template's path, device, inode, size and modification time and by the settings
they depend on, and passed to `subtract` as ``templateAnalysis``. The outputs are bit for bit
those of a serial ``subtract(science, template).writeFits(output)``. The kernel sources and the
template's FWHM are not cached: they are the science image's stars, measured in the template.
"""

from __future__ import annotations

from .pairs import BatchPair, readPairs
from .runner import MANIFEST_NAME as MANIFEST_NAME  # the default manifest's file name
from .runner import BatchSummary, localClient, readManifest, subtractBatch

__all__ = ["BatchPair", "BatchSummary", "localClient", "readManifest", "readPairs", "subtractBatch"]

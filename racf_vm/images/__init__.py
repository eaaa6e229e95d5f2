"""Images: the site catalog (catalog), base-image validation (imageheader), and their
distribution: publish images over HTTP, keep a verified node cache (seed 003).

Conventions shared by the publisher, the web server and every node:

* The server directory at ``[images] source_url`` holds one compressed file per image,
  ``<basename>.gz``, ``<basename>.zst`` or ``<basename>.xz``, and a checksum list
  (``[images] checksum_file``, default ``SHA256SUMS``) in ``sha256sum`` format whose
  lines name those compressed files but carry the sha256 of the *uncompressed* image.
  The list is replaced last and atomically, so it never names a file not yet there.
* On a node, the cache directory (``[images] cache_dir``, by default ``paths.image_dir``)
  holds each image uncompressed under ``<basename>``; a catalog entry whose ``path`` is
  ``<cache_dir>/<basename>`` is served by the cache. Dot-files in the cache belong to
  racf-vm: ``.verified.json`` (sha256 per image, keyed by size, mtime and inode, so an
  unchanged image is never hashed twice), ``.remote-list.json`` (the last list with its
  ETag / Last-Modified), ``.locks/`` (one flock file per image) and, while a download
  runs, ``.tmp-<basename>-<random>``.
* A running job holds a shared flock on its base image (``hold_image``); withdrawing or
  replacing an image takes a non-blocking exclusive flock and leaves a busy image in
  place (reported, and handled by a later sync once free).
* Every wait is bounded: an image's lock by ``[images] lock_timeout``; its holder's
  network work by ``download_timeout`` (a wall clock over the whole transfer, not per
  read); an image's size by ``max_image_bytes`` or the catalog's ``size``.
"""

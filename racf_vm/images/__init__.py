"""Images: the site catalog (catalog), base-image validation (imageheader), and their
distribution: publish images over HTTP, keep a verified node cache (seed 003).

Conventions shared by the publisher, the web server and every node:

* The server directory at ``[images] source_url`` holds one compressed file per image,
  ``<basename>.gz``, ``<basename>.zst`` or ``<basename>.xz``, and a checksum list
  (``[images] checksum_file``, default ``SHA256SUMS``) in ``sha256sum`` format whose
  lines name those compressed files but carry the sha256 of the *uncompressed* image.
  The list is replaced last and atomically, so it never names a file not yet there. It
  is signed (racf_vm.images.signedlist) with the site's key; a node with
  ``[images] trusted_keys`` uses no line of an unverified list.
* On a node, the cache directory (``[images] cache_dir``, by default ``paths.image_dir``)
  holds each image uncompressed under ``<basename>``; a catalog entry whose ``path`` is
  ``<cache_dir>/<basename>`` is served by the cache. Dot-files in the cache belong to
  racf-vm: ``.verified.json`` (sha256 per image, keyed by size, mtime and inode, so an
  unchanged image is never hashed twice; origin "server" or "local"),
  ``.remote-list.json`` (the last verified list with its ETag / Last-Modified),
  ``.versions/<basename>@<sha256>`` (hard links: the files jobs use), ``.locks/`` (one
  flock file per image) and, while a download runs, ``.tmp-<basename>-<random>``.
* A running job holds a shared flock on the version link of its base image
  (racf_vm.images.jobimage); a new version replaces ``<basename>`` without touching it,
  and withdrawing an image takes a non-blocking exclusive flock and leaves a busy image
  in place (reported, and handled by a later check once free).
* Every wait is bounded: an image's lock by ``[images] lock_timeout``; its holder's
  network work by ``download_timeout`` (a wall clock over the whole transfer, not per
  read); an image's size by ``max_image_bytes`` or the catalog's ``size``.
"""

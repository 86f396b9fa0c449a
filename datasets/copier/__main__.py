"""`python -m datasets.copier --source SRC --dest DIR`: what the prewarm Job runs.

Exit code 0 when the destination holds the source's files, 2 otherwise; either way the last
line on stdout says which (`done` or `error`), see datasets.copier.progress.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from datasets.copier import s3
from datasets.copier.errors import CopierError
from datasets.copier.finish import Finisher
from datasets.copier.plan import Destination, Manifest, Plan, make_plan
from datasets.copier.progress import Emitter, Progress, partial_bytes

FILES_PER_LINE = 500  # the `files` event comes in chunks so that no log line gets huge
PATHS_SHOWN = 20


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        raise CopierError("BadArguments", f"{message[:1].upper()}{message[1:]}. Usage: {usage}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m datasets.copier",
        description="Copy a dataset (S3 prefix, Hugging Face repo or local folder) into a cache "
        "folder, resumably, printing JSON progress lines. S3 credentials come from "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a Hugging Face token from HF_TOKEN.",
    )
    parser.add_argument(
        "--source",
        required=True,
        help="s3://bucket/prefix, hf://owner/name@revision, modelscope://owner/name@revision "
        "(token from MODELSCOPE_API_TOKEN), or a local folder",
    )
    parser.add_argument("--dest", required=True, help="the cache folder")
    parser.add_argument("--workers", type=int, default=16, help="files copied at once (default 16)")
    parser.add_argument("--endpoint-url", default=None, help="S3 endpoint (other than AWS), or a hub mirror")
    parser.add_argument("--region", default=None, help="S3 region")
    parser.add_argument(
        "--path-style", action="store_true", help="S3 path-style addressing (bucket in the path)"
    )
    parser.add_argument(
        "--verify-md5",
        action="store_true",
        help="also compare MD5s: with the ETag of single-part S3 objects, or with the local source file",
    )
    parser.add_argument("--progress-interval", type=float, default=0.5, help="seconds between progress lines")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    args.progress_interval = max(0.05, args.progress_interval)
    return args


def run(args: argparse.Namespace, emitter: Emitter) -> None:
    started = time.monotonic()
    dest = Destination(Path(args.dest))
    s3_source = hub_source = ms_source = None
    # Only the S3 path is imported up front: it is the one whose s5cmd should start at once.
    if args.source.startswith("modelscope://"):  # modelscope.SCHEME, before importing it
        from datasets.copier import modelscope

        source_module = modelscope
        ms_source = modelscope.ModelScopeSource.parse(
            args.source, endpoint_url=args.endpoint_url, token=os.environ.get(modelscope.TOKEN_ENV)
        )
        label = ms_source.label
    elif args.source.startswith("hf://"):
        from datasets.copier import hub

        source_module = hub
        hub_source = hub.HubSource.parse(
            args.source, endpoint_url=args.endpoint_url, token=os.environ.get("HF_TOKEN")
        )
        label = hub_source.label
    elif args.source.startswith("s3://"):
        source_module = s3
        s3_source = s3.S3Source.parse(
            args.source, endpoint_url=args.endpoint_url, region=args.region, path_style=args.path_style
        )
        label = s3_source.label
    else:
        from datasets.copier import local

        source_module = local
        local_root = Path(args.source)
        label = f"local {local_root.absolute()}"
    dest.prepare()
    with dest.locked() as lock_fd:
        interrupted = dest.was_interrupted()
        manifest = Manifest.load(dest, label)
        early, early_started = None, None
        if (
            s3_source is not None
            and not manifest.files
            and not interrupted  # leftovers of a killed s5cmd must go first, which takes the listing
            and s3.can_start_before_listing(s3_source)
        ):
            # A first run copies everything, so s5cmd starts on the whole prefix now, while a
            # second s5cmd lists it: the copy need not wait for the listing.
            early_started = time.monotonic()
            dest.start_changing()
            early = s3.start_copy(s3_source, workers=args.workers, lock_fd=lock_fd)
            early.send([s3.everything_command(s3_source, dest.root)])
        progress = finisher = plan = None
        completed = False
        try:
            if ms_source is not None:
                listed, others = modelscope.list_files(ms_source)
            elif hub_source is not None:
                commit, listed, others = hub.list_files(hub_source)
            elif s3_source is not None:
                listed, others = s3.list_files(s3_source)
            else:
                listed, others = local.list_files(local_root, dest.root)
            plan = make_plan(listed, manifest, dest)
            plan.ignored += [p for p in others if p and not p.endswith("/")]
            if early is None and (plan.to_copy or plan.removed):
                dest.start_changing()
            for path, _size in plan.removed:
                dest.remove(path)
                manifest.forget(path)
            emitter.emit("plan", **_plan_fields(plan, args.source))
            _check_space(plan, dest)
            if s3_source is not None and interrupted:
                dest.sweep_s5cmd_leftovers({f.path for f in plan.files})

            progress = Progress(
                emitter,
                files_total=len(plan.files),
                bytes_total=plan.bytes_total,
                files_skipped=len(plan.skipped),
                bytes_skipped=plan.bytes_skipped,
                in_flight=lambda: partial_bytes(dest.partial_root),
                interval=args.progress_interval,
                started=early_started,
            )
            expected_md5 = source_module.expected_md5 if args.verify_md5 else None
            finisher = Finisher(
                dest,
                manifest,
                progress,
                expected_md5=expected_md5,
                workers=min(args.workers, 8),
                in_place=s3_source is not None,  # s5cmd writes each file whole under its final name
            )
            copy_started = early_started or time.monotonic()
            if plan.to_copy and s3_source is not None:
                every_key = [f.path for f in plan.files] + others
                s3.copy(
                    s3_source,
                    plan.to_copy,
                    every_key,
                    dest,
                    finisher,
                    progress,
                    workers=args.workers,
                    lock_fd=lock_fd,
                    running=early,
                )
            elif plan.to_copy and ms_source is not None:
                modelscope.copy(ms_source, plan.to_copy, dest, finisher, progress, workers=args.workers)
            elif plan.to_copy and hub_source is not None:
                hub.copy(hub_source, commit, plan.to_copy, dest, finisher, progress, workers=args.workers)
            elif plan.to_copy:
                local.copy(plan.to_copy, dest, finisher, progress, workers=args.workers)
            copy_seconds = time.monotonic() - copy_started
            completed = True
        finally:
            if early is not None:
                early.stop()  # before the temporary folder goes
            if progress is not None:
                progress.stop()
            try:
                if finisher is not None:
                    finisher.close()
            finally:
                # If the manifest cannot be written, the journal still holds what was finished.
                with contextlib.suppress(OSError):
                    manifest.save()
                if s3_source is not None and not completed and plan is not None:
                    dest.sweep_s5cmd_leftovers({f.path for f in plan.files})  # s5cmd was stopped
                # (Only an S3 copy starts early, and a completed copy had its plan.)
                if plan is not None or early is None:
                    dest.clear_partial()
                # else s5cmd copied before the listing failed: the next run sweeps (see was_interrupted()).

    files = sorted((f.path, f.size) for f in plan.files)
    for i in range(0, len(files), FILES_PER_LINE):
        emitter.emit("files", files=[list(f) for f in files[i : i + FILES_PER_LINE]])
    seconds = time.monotonic() - started
    copied = plan.bytes_to_copy
    done: dict[str, Any] = {
        "files_done": len(plan.files),
        "files_total": len(plan.files),
        "bytes_done": plan.bytes_total,
        "bytes_total": plan.bytes_total,
        "files_copied": len(plan.to_copy),
        "bytes_copied": copied,
        "files_skipped": len(plan.skipped),
        "bytes_skipped": plan.bytes_skipped,
        "files_removed": len(plan.removed),
        "rate_bytes_per_second": round(copied / copy_seconds) if copied and copy_seconds > 0 else 0,
        "seconds": round(seconds, 3),
    }
    if args.verify_md5:
        done["md5_verified"] = finisher.md5_verified
        done["md5_unverifiable"] = finisher.md5_unverifiable
    done["message"] = _done_message(plan, seconds, finisher if args.verify_md5 else None)
    emitter.emit("done", **done)


def _plan_fields(plan: Plan, source: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "source": source,
        "files_total": len(plan.files),
        "bytes_total": plan.bytes_total,
        "files_skipped": len(plan.skipped),
        "bytes_skipped": plan.bytes_skipped,
        "files_to_copy": len(plan.to_copy),
        "bytes_to_copy": plan.bytes_to_copy,
        "files_removed": len(plan.removed),
        "bytes_removed": sum(size for _path, size in plan.removed),
    }
    if plan.removed:
        fields["removed"] = sorted(path for path, _size in plan.removed)[:PATHS_SHOWN]
    if plan.ignored:
        fields["ignored"] = sorted(plan.ignored)[:PATHS_SHOWN]
    parts = [
        f"{len(plan.files)} files ({_size(plan.bytes_total)}) at {source}",
        f"{len(plan.skipped)} already in place",
        f"{len(plan.to_copy)} to copy ({_size(plan.bytes_to_copy)})",
    ]
    if plan.removed:
        shown = ", ".join(fields["removed"][:3]) + (", …" if len(plan.removed) > 3 else "")
        parts.append(f"{len(plan.removed)} removed because the source no longer has them ({shown})")
    if plan.ignored:
        parts.append(f"{len(plan.ignored)} ignored: not files, or names that cannot be paths here")
    fields["message"] = "; ".join(parts) + "."
    return fields


def _done_message(plan: Plan, seconds: float, finisher: Finisher | None) -> str:
    message = f"Copied {len(plan.to_copy)} files ({_size(plan.bytes_to_copy)}) in {seconds:.1f} s"
    message += f"; {len(plan.skipped)} were already in place"
    if plan.removed:
        message += f"; removed {len(plan.removed)} that the source no longer has"
    if finisher is not None:
        message += f"; MD5 checked for {finisher.md5_verified}"
        if finisher.md5_unverifiable:
            message += f" ({finisher.md5_unverifiable} without an MD5 ETag: size checked only)"
    return message + "."


def _check_space(plan: Plan, dest: Destination) -> None:
    free = shutil.disk_usage(dest.root).free
    if plan.bytes_to_copy > free:
        raise CopierError(
            "NoSpace",
            f"Copying needs {_size(plan.bytes_to_copy)} but {dest.root} has {_size(free)} free: make the "
            f"cache volume larger (the whole dataset is {_size(plan.bytes_total)}).",
        )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise CopierError(
        "Interrupted",
        "Stopped by SIGTERM (the pod was deleted or the Job cancelled). Finished files are kept; "
        "the next run copies the rest.",
    )


def main(argv: list[str] | None = None) -> int:
    emitter = Emitter()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run(parse_args(argv), emitter)
        return 0
    except CopierError as exc:
        emitter.emit("error", reason=exc.reason, message=exc.message)
    except KeyboardInterrupt:
        emitter.emit("error", reason="Interrupted", message="Stopped by an interrupt; the next run resumes.")
    except OSError as exc:
        emitter.emit("error", **_os_error(exc))
    except Exception as exc:
        traceback.print_exc()  # stderr: the pod log keeps it for whoever reads the tail
        emitter.emit("error", reason="CopyFailed", message=f"Unexpected {type(exc).__name__}: {exc}")
    return 2


def _os_error(exc: OSError) -> dict[str, str]:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return {
            "reason": "NoSpace",
            "message": f"The destination is full{where}: make the cache volume larger.",
        }
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return {"reason": "DestinationUnwritable", "message": f"{exc.strerror}{where}."}
    return {"reason": "CopyFailed", "message": f"{exc.strerror or exc}{where}."}


if __name__ == "__main__":
    status = main()
    # Everything is written and closed by now (stdout is flushed line by line): skip the
    # interpreter's teardown of modules and threads, a few tens of ms at the end of every run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

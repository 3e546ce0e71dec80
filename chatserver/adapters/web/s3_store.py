"""Files' bytes in an S3-compatible bucket (`--files s3://BUCKET/PREFIX?endpoint=URL`), for a
cluster whose nodes share no folder. boto3 does the S3 side (multipart uploads included), in
worker threads; uploads are staged in a local folder while they arrive and are hashed, then
sent to the bucket under their sha256; downloads stream from the bucket, Range included.
Credentials and region come from boto3's usual places (AWS_ACCESS_KEY_ID, ..., ~/.aws)."""

import contextlib
import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import boto3
from aiohttp import web

READ_CHUNK = 256 * 1024


class S3Store:
    def __init__(self, url: str, staging: Path) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://BUCKET/PREFIX URL: {url!r}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        endpoint = parse_qs(parts.query).get("endpoint", [None])[0]
        region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name=region)
        self.staging = staging

    def prepare(self) -> None:
        """Make the staging folder (emptied of what a crash left) and check the bucket."""
        self.staging.mkdir(parents=True, exist_ok=True)
        for leftover in self.staging.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        self.client.head_bucket(Bucket=self.bucket)

    def key(self, sha256: str) -> str:
        name = f"{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def new_upload(self) -> Path:
        return self.staging / secrets.token_hex(16)

    def keep(self, upload: Path, sha256: str) -> None:
        """Send a finished upload to the bucket (the caller removes the staged copy)."""
        self.client.upload_file(str(upload), self.bucket, self.key(sha256))

    async def delete(self, sha256: str) -> None:
        await anyio.to_thread.run_sync(
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        )

    async def response(
        self, request: web.BaseRequest, sha256: str, headers: dict[str, str]
    ) -> web.StreamResponse | None:
        key = self.key(sha256)
        try:
            head = await anyio.to_thread.run_sync(
                lambda: self.client.head_object(Bucket=self.bucket, Key=key)
            )
        except self.client.exceptions.ClientError:
            return None
        size = int(head["ContentLength"])
        start, stop, status = 0, size, 200
        try:
            wanted = request.http_range
        except ValueError:
            wanted = slice(None, None)
        if wanted.start is not None or wanted.stop is not None:
            start = wanted.start if wanted.start is not None else 0
            if start < 0:  # the last -start bytes
                start, stop = max(size + start, 0), size
            else:
                stop = size if wanted.stop is None else min(wanted.stop, size)
            if start >= stop:
                answer = web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
                answer.force_close()
                return answer
            status = 206
        response = web.StreamResponse(status=status, headers=headers)
        response.headers["Accept-Ranges"] = "bytes"
        response.content_length = stop - start
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        response.force_close()
        await response.prepare(request)
        if request.method == "HEAD" or stop == start:
            await response.write_eof()
            return response
        body = (await anyio.to_thread.run_sync(lambda: self.client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes={start}-{stop - 1}"
        )))["Body"]
        try:
            while chunk := await anyio.to_thread.run_sync(body.read, READ_CHUNK):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-download: nothing more to do
        finally:
            body.close()
        return response

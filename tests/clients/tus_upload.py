"""Upload a file with tuspy (the Python tus client), as tests/tus.rs drives it.

    python3 tus_upload.py ENDPOINT TOKEN FILE DRIVE_PATH CHUNK_SIZE

Pieces of CHUNK_SIZE bytes, each with a sha1 Upload-Checksum; a failed request (a cut
connection, a server that is restarting) is retried after asking the server for its offset.
Prints the upload's URL. Exits non-zero if tuspy is missing (tools/setup installs it).
"""
import sys

from tusclient import client

endpoint, token, src, path, chunk = sys.argv[1:6]
c = client.TusClient(endpoint, headers={"Authorization": "Bearer " + token})
uploader = c.uploader(
    src,
    chunk_size=int(chunk),
    metadata={"path": path},
    retries=60,
    retry_delay=1,
    upload_checksum=True,
)
uploader.upload()
print(uploader.url)

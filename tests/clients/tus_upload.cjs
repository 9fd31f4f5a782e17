// Upload a file with tus-js-client in Node, as tests/tus.rs drives it.
//
//   node tus_upload.cjs ENDPOINT TOKEN FILE DRIVE_PATH CHUNK_SIZE
//
// Pieces of CHUNK_SIZE bytes; a failed request (a cut connection, a server that is restarting)
// is retried after a HEAD for the offset. Prints the upload's URL. The client comes from
// tools/tus-js (installed by tools/setup); without it this exits non-zero.
'use strict';
const fs = require('fs');
const path = require('path');
const tus = require(path.join(__dirname, '..', '..', 'tools', 'tus-js', 'node_modules', 'tus-js-client'));

const [endpoint, token, src, drivePath, chunk] = process.argv.slice(2);
const data = fs.readFileSync(src);
const upload = new tus.Upload(data, {
  endpoint,
  chunkSize: Number(chunk),
  headers: { Authorization: `Bearer ${token}` },
  metadata: { path: drivePath },
  retryDelays: [0, 250, 500, 1000, 1000, 2000, 2000, 4000, 4000, 8000, 8000],
  onError(err) {
    console.error(`tus-js-client failed: ${err}`);
    process.exit(1);
  },
  onSuccess() {
    console.log(upload.url);
  },
});
upload.start();

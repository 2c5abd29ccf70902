#!/usr/bin/env node
// A Tributary client in another language, written from docs/PROTOCOL.md alone (plain Node.js, built-in modules only).
//
// Node's `crypto` has Ed25519 but no BLAKE2b-256 (its blake2b512 is BLAKE2b with a 64-byte digest, a different
// function, not a prefix of it), so BLAKE2b (RFC 7693) is implemented here, with the digest length 32 in its
// parameter block.
//
//   node node_client.mjs keygen --key FILE [--seed HEX]   write a 32-byte seed (hex, mode 0600) to FILE, print the
//                                                          public key (64 lowercase hex), the one to send the operator
//   node node_client.mjs pubkey --key FILE                 print the public key of a seed file
//   node node_client.mjs digest FILE...                    print each file's BLAKE2b-256 (64 lowercase hex)
//   node node_client.mjs dataset --key FILE --drop DIR --task TASK --rows ROWS.json --name NAME.csv [--tamper]
//        write ROWS.json (a JSON array of row objects) as CSV (UTF-8, comma, header row) and drop it, signed;
//        --tamper flips one byte of the payload after signing (a submission ingest must refuse: digest_mismatch)
//   node node_client.mjs request --key FILE --drop DIR --action stake|unstake|transfer --amount-units N [--to HEX]
//   node node_client.mjs commit --key FILE --drop DIR --epoch E --weights JSON [--salt HEX]
//        a validator's weights commitment: {"epoch": E, "commitment": BLAKE2b-256 of the canonical JSON of
//        {"epoch", "salt", "weights"}}; prints {"commitment", "salt", "manifest"} as JSON (keep the salt to reveal)
//   node node_client.mjs commitment --epoch E --weights JSON --salt HEX   print the commitment only (no files)
// Every dropping command also takes [--nonce N] (default: one above the last, kept in FILE.nonce) and
// [--created-at ISO] (default: now), and prints the manifest it dropped as JSON on stdout.

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

// ------------------------------------------------------------------------------------------ BLAKE2b (RFC 7693)
const MASK64 = (1n << 64n) - 1n;
const IV = [
  0x6a09e667f3bcc908n, 0xbb67ae8584caa73bn, 0x3c6ef372fe94f82bn, 0xa54ff53a5f1d36f1n,
  0x510e527fade682d1n, 0x9b05688c2b3e6c1fn, 0x1f83d9abfb41bd6bn, 0x5be0cd19137e2179n,
];
const SIGMA = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
  [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
  [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
  [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
  [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
  [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
  [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
  [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
  [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
  [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];
const BLOCK = 128;

const rotr = (x, n) => ((x >> n) | (x << (64n - n))) & MASK64;

function mix(v, a, b, c, d, x, y) {
  v[a] = (v[a] + v[b] + x) & MASK64;
  v[d] = rotr(v[d] ^ v[a], 32n);
  v[c] = (v[c] + v[d]) & MASK64;
  v[b] = rotr(v[b] ^ v[c], 24n);
  v[a] = (v[a] + v[b] + y) & MASK64;
  v[d] = rotr(v[d] ^ v[a], 16n);
  v[c] = (v[c] + v[d]) & MASK64;
  v[b] = rotr(v[b] ^ v[c], 63n);
}

function compress(h, block, t, last) {
  const view = new DataView(block.buffer, block.byteOffset, BLOCK);
  const m = Array.from({ length: 16 }, (_, i) => view.getBigUint64(8 * i, true));
  const v = [...h, ...IV];
  v[12] ^= t & MASK64;
  v[13] ^= t >> 64n;
  if (last) v[14] ^= MASK64;
  for (let r = 0; r < 12; r++) {
    const s = SIGMA[r % 10];
    mix(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
    mix(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
    mix(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
    mix(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
    mix(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
    mix(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
    mix(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
    mix(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
  }
  for (let i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/** BLAKE2b with an `outlen`-byte digest, no key, no salt, no personalization: hex of the digest. */
export function blake2b(data, outlen = 32) {
  const h = [...IV];
  h[0] ^= 0x01010000n ^ BigInt(outlen); // parameter block: digest length, key length 0, fanout 1, depth 1
  const n = data.length;
  let offset = 0;
  while (n - offset > BLOCK) { // every block but the last, which is compressed with the final flag
    compress(h, data.subarray(offset, offset + BLOCK), BigInt(offset + BLOCK), false);
    offset += BLOCK;
  }
  const last = new Uint8Array(BLOCK); // the last (possibly empty) block, zero-padded
  last.set(data.subarray(offset));
  compress(h, last, BigInt(n), true);
  const out = new Uint8Array(64);
  const view = new DataView(out.buffer);
  h.forEach((word, i) => view.setBigUint64(8 * i, word, true));
  return Buffer.from(out.subarray(0, outlen)).toString("hex");
}

// ------------------------------------------------------------------------------------------ canonical JSON (§3)
/** A number that Python holds as a float: written the way Python's json writes a float (its repr). */
export class PyFloat {
  constructor(value) { this.value = value; }
}

/** Python's float repr: the shortest digits that round-trip; exponent form when the decimal exponent is below -4 or
 *  at least 16 ("1e-05", "1e+16"), else positional with at least one digit after the point ("1.0", "0.0001"). */
export function pythonFloat(x) {
  if (!Number.isFinite(x)) throw new Error(`${x} is not a finite number: canonical JSON has no NaN or Infinity`);
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mant, exp] = Math.abs(x).toExponential().split("e"); // toExponential(): shortest round-trip digits
  const digits = mant.replace(".", "");
  const e = Number(exp);
  const decpt = e + 1; // value = 0.DIGITS × 10^decpt
  if (decpt <= -4 || decpt > 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (decpt <= 0) return `${sign}0.${"0".repeat(-decpt)}${digits}`;
  if (decpt >= digits.length) return `${sign}${digits}${"0".repeat(decpt - digits.length)}.0`;
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
}

function compareCodePoints(a, b) { // sort by Unicode code point (JS's default sort compares UTF-16 units)
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function jsonString(s) {
  if (/\p{Cs}/u.test(s)) throw new Error(`${JSON.stringify(s)} holds a lone surrogate: it has no UTF-8 encoding`);
  // JSON.stringify escapes exactly '"', '\\' and U+0000..U+001F (\b \f \n \r \t, else \u00xx in lowercase) and
  // writes every other character as itself, as the document's recipe does
  return JSON.stringify(s);
}

/** Canonical JSON text: keys sorted by code point, separators "," and ":", no whitespace, non-ASCII as itself.
 *  Integers are BigInt or safe-integer Numbers; floats must be wrapped in PyFloat. */
export function canonical(value) {
  if (value === null || value === true || value === false) return String(value);
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`${value}: write integers as safe integers or BigInt, floats as PyFloat`);
    return String(value);
  }
  if (value instanceof PyFloat) return pythonFloat(value.value);
  if (typeof value === "string") return jsonString(value);
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  const keys = Object.keys(value).sort(compareCodePoints);
  return `{${keys.map((k) => `${jsonString(k)}:${canonical(value[k])}`).join(",")}}`;
}

// ------------------------------------------------------------------------------------------ keys (§1)
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex"); // RFC 8410 wrapper of a seed

function loadKey(file) {
  const seed = Buffer.from(fs.readFileSync(file, "utf8").trim(), "hex");
  if (seed.length !== 32) throw new Error(`${file}: not a 32-byte hex Ed25519 seed`);
  const privateKey = crypto.createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8",
  });
  const spki = crypto.createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return { privateKey, publicHex: spki.subarray(spki.length - 32).toString("hex") };
}

function keygen(file, seedHex) {
  const seed = seedHex ? Buffer.from(seedHex, "hex") : crypto.randomBytes(32);
  if (seed.length !== 32 || (seedHex && seed.toString("hex") !== seedHex.toLowerCase())) {
    throw new Error("--seed must be 64 hex characters (a 32-byte Ed25519 seed)");
  }
  fs.writeFileSync(file, seed.toString("hex") + "\n", { mode: 0o600, flag: "wx" }); // never overwrite a key
  return loadKey(file).publicHex;
}

function nextNonce(keyFile, given) {
  const counter = `${keyFile}.nonce`;
  const last = fs.existsSync(counter) ? BigInt(fs.readFileSync(counter, "utf8").trim()) : 0n;
  const nonce = given !== undefined ? BigInt(given) : last + 1n;
  if (nonce < 0n || nonce >= 1n << 63n) throw new Error("--nonce must be in 0 .. 2^63-1");
  if (nonce > last) writeRenamed(counter, `.${path.basename(counter)}.tmp`, Buffer.from(nonce.toString())); // persist before signing
  return nonce;
}

// ------------------------------------------------------------------------------------------ files (§2, §3)
/** §2: write under a dot-name, flush it to disk, then rename it to its final name. */
function writeRenamed(finalPath, tempName, data) {
  if (!tempName.startsWith(".")) throw new Error("a temporary name must start with '.'");
  const temp = path.join(path.dirname(finalPath), tempName);
  const fd = fs.openSync(temp, "wx", 0o644);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temp, finalPath);
}

function signedManifest(key, { kind, task, payloadName, payload, nonce, createdAt }) {
  const fields = {
    version: 1,
    kind,
    task,
    payload: payloadName,
    size: BigInt(payload.length),
    digest: blake2b(payload),
    nonce,
    created_at: createdAt ?? new Date().toISOString(),
    public_key: key.publicHex,
  };
  const signedBytes = Buffer.from(canonical(fields), "utf8");
  const signature = crypto.sign(null, signedBytes, key.privateKey).toString("hex");
  return { ...fields, signature };
}

/** Drop a payload and its manifest: the payload renamed in first, the manifest last (§2). */
function dropSubmission(drop, payloadName, payload, manifest) {
  writeRenamed(path.join(drop, payloadName), `.${payloadName}.partial`, payload);
  writeRenamed(path.join(drop, `${payloadName}.manifest.json`), `.${payloadName}.manifest.json.writing`,
    Buffer.from(canonical(manifest) + "\n", "utf8"));
}

function sign(opts, kind, task, payloadName, payload, { tamper = false } = {}) {
  const key = loadKey(need(opts, "key"));
  const nonce = nextNonce(opts.key, opts.nonce);
  const manifest = signedManifest(key, { kind, task, payloadName, payload, nonce, createdAt: opts["created-at"] });
  if (tamper) payload[Math.floor(payload.length / 2)] ^= 0x01; // one bit of one byte, after signing
  dropSubmission(need(opts, "drop"), payloadName, payload, manifest);
  return manifest;
}

// ------------------------------------------------------------------------------------------ payloads
function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** §2: a CSV payload is UTF-8, comma-separated, with a header row. */
function csvBytes(rows) {
  if (!Array.isArray(rows) || rows.length === 0) throw new Error("--rows must hold a non-empty JSON array of objects");
  const columns = Object.keys(rows[0]);
  const lines = [columns.map(csvField).join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvField(row[c])).join(","));
  return Buffer.from(lines.join("\n") + "\n", "utf8");
}

function weightsOf(text) { // weights are floats to the market (it hashes float(w)): keep them as PyFloat
  const raw = JSON.parse(text);
  return Object.fromEntries(Object.entries(raw).map(([k, w]) => [k, new PyFloat(Number(w))]));
}

function commitment(epoch, weights, salt) {
  return blake2b(Buffer.from(canonical({ epoch, weights, salt }), "utf8"));
}

// ------------------------------------------------------------------------------------------ command line
function parseArgs(argv) {
  const opts = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) { opts._.push(a); continue; }
    const name = a.slice(2);
    if (name === "tamper") { opts.tamper = true; continue; }
    if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
    opts[name] = argv[++i];
  }
  return opts;
}

function need(opts, name) {
  if (opts[name] === undefined) throw new Error(`--${name} is required`);
  return opts[name];
}

const stamp = () => new Date().toISOString().replace(/[-:.]/g, "");

function main(argv) {
  const [command, ...rest] = argv;
  const opts = parseArgs(rest);
  const print = (obj) => console.log(typeof obj === "string" ? obj : canonical(obj));
  switch (command) {
    case "keygen":
      return print(keygen(need(opts, "key"), opts.seed));
    case "pubkey":
      return print(loadKey(need(opts, "key")).publicHex);
    case "digest":
      for (const file of opts._) print(blake2b(fs.readFileSync(file)));
      return;
    case "dataset": {
      const rows = JSON.parse(fs.readFileSync(need(opts, "rows"), "utf8"));
      const name = opts.name ?? `node-${stamp()}.csv`;
      return print(sign(opts, "dataset", need(opts, "task"), name, csvBytes(rows), { tamper: !!opts.tamper }));
    }
    case "request": {
      const action = need(opts, "action");
      if (!["stake", "unstake", "transfer"].includes(action)) throw new Error("--action must be stake, unstake or transfer");
      const body = { action, amount_units: BigInt(need(opts, "amount-units")) };
      if (action === "transfer") body.to = need(opts, "to").toLowerCase();
      const name = opts.name ?? `node-${action}-${stamp()}.json`;
      return print(sign(opts, "request", "-", name, Buffer.from(canonical(body), "utf8"), { tamper: !!opts.tamper }));
    }
    case "commit": {
      const epoch = BigInt(need(opts, "epoch"));
      const salt = opts.salt ?? crypto.randomBytes(16).toString("hex");
      const c = commitment(epoch, weightsOf(need(opts, "weights")), salt);
      const name = opts.name ?? `node-commit-${epoch}-${stamp()}.json`;
      const manifest = sign(opts, "weights", "-", name, Buffer.from(canonical({ epoch, commitment: c }), "utf8"));
      return print({ commitment: c, salt, manifest });
    }
    case "commitment":
      return print(commitment(BigInt(need(opts, "epoch")), weightsOf(need(opts, "weights")), need(opts, "salt")));
    default:
      throw new Error(`unknown command ${JSON.stringify(command)}: keygen, pubkey, digest, dataset, request, commit, commitment`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) { // run, not imported
  try {
    main(process.argv.slice(2));
  } catch (e) {
    console.error(`node_client: ${e.message}`);
    process.exit(1);
  }
}

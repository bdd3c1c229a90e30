/*
 * npm-fetch.mjs - download one npm package tarball and check it against a
 * pinned SHA-512, with nothing but Node (no npm in the image).  Used while
 * a template is built:
 *
 *   node npm-fetch.mjs NAME VERSION SHA512-HEX OUT.tgz
 */
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";

const [ name, version, sha512, out ] = process.argv.slice (2);
if (!out || !/^[a-z0-9._-]+$/.test (name) || !/^[0-9A-Za-z.+-]+$/.test (version) || !/^[0-9a-f]{128}$/.test (sha512))
  {
    console.error ("usage: npm-fetch.mjs NAME VERSION SHA512-HEX OUT");
    process.exit (2);
  }
const url = `https://registry.npmjs.org/${name}/-/${name}-${version}.tgz`;
const res = await fetch (url);
if (!res.ok)
  {
    console.error (`${url}: HTTP ${res.status}`);
    process.exit (1);
  }
const body = Buffer.from (await res.arrayBuffer ());
const got = createHash ("sha512").update (body).digest ("hex");
if (got !== sha512)
  {
    console.error (`${url}: SHA-512 ${got}, expected ${sha512}`);
    process.exit (1);
  }
writeFileSync (out, body);
console.error (`${url}: ${body.length} bytes, SHA-512 verified`);

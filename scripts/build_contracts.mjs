#!/usr/bin/env node
// Compile din_cli/chain/contracts/*.sol with the pinned solc-js into din_cli/chain/artifacts/.
//
//   node scripts/build_contracts.mjs          write <Name>.json ({"abi","bytecode"}) and manifest.json
//   node scripts/build_contracts.mjs --check  recompile and exit 1 if the committed artifacts differ
//
// Output is deterministic: relative source unit names, metadata.bytecodeHash "none", sorted keys.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync, existsSync, mkdirSync, renameSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SRC_DIR = "din_cli/chain/contracts";
const OUT_DIR = join(ROOT, "din_cli/chain/artifacts");
const NODE_MODULES = join(ROOT, "node_modules");
// Contracts that get an artifact. DinPayouts is a linked library (external functions, reached by
// DELEGATECALL): DinTasks' artifact lists where its address goes (`links`); the other libraries are
// internal and inlined.
const DEPLOYABLE = ["DinToken", "ValidatorRegistry", "DinPayouts", "DinTasks", "DinDisputes", "DinGovernor", "DinGrants"];
const SETTINGS = {
  evmVersion: "prague",
  viaIR: true,
  optimizer: { enabled: true, runs: 1 },
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.bytecode.linkReferences", "evm.deployedBytecode.object", "storageLayout"] } },
};

const solc = require(join(NODE_MODULES, "solc"));
const check = process.argv.includes("--check");

function sha256(text) {
  return createHash("sha256").update(text).digest("hex");
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

function dump(value) {
  return JSON.stringify(sortKeys(value), null, 1) + "\n";
}

const sources = {};
for (const file of readdirSync(join(ROOT, SRC_DIR)).filter((f) => f.endsWith(".sol")).sort()) {
  const name = `${SRC_DIR}/${file}`;
  sources[name] = { content: readFileSync(join(ROOT, name), "utf8") };
}
const used = {};
function findImports(path) {
  if (path.startsWith("@openzeppelin/")) {
    const content = readFileSync(join(NODE_MODULES, path), "utf8");
    used[path] = content;
    return { contents: content };
  }
  return { error: `not found: ${path}` };
}

const input = { language: "Solidity", sources, settings: SETTINGS };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if (errors.length) process.exit(1);

// Storage layout of the structs a contract returns as raw words (e.g. DinTasks.taskWords), so
// clients decode them by name: {Struct: {slots, members: [{label, slot, offset, bytes, length?}]}}.
function structWords(layout, contract) {
  const out = {};
  for (const type of Object.values(layout.types || {})) {
    const m = /^struct (?:(\w+)\.)?(\w+)$/.exec(type.label); // file-level structs have no prefix
    if (!m || (m[1] && m[1] !== contract) || !EXPOSED_STRUCTS.includes(m[2])) continue;
    out[m[2]] = {
      slots: Number(type.numberOfBytes) / 32,
      members: type.members.map((member) => {
        const t = layout.types[member.type];
        const field = { label: member.label, slot: Number(member.slot), offset: member.offset, bytes: Number(t.numberOfBytes), type: t.label };
        if (t.base) {
          field.bytes = Number(layout.types[t.base].numberOfBytes);
          field.length = Number(/\[(\d+)\]$/.exec(t.label)[1]);
        }
        return field;
      }),
    };
  }
  return out;
}
const EXPOSED_STRUCTS = ["Task"];

const files = {};
const sizes = {};
for (const [unit, contracts] of Object.entries(output.contracts)) {
  for (const [name, c] of Object.entries(contracts)) {
    if (!DEPLOYABLE.includes(name)) continue;
    const runtime = c.evm.deployedBytecode.object.length / 2;
    sizes[name] = runtime;
    if (runtime > 24576) {
      process.stderr.write(`${name}: runtime code ${runtime} bytes exceeds the 24576-byte limit (EIP-170)\n`);
      process.exit(1);
    }
    const artifact = { abi: c.abi, bytecode: "0x" + c.evm.bytecode.object, source: unit };
    // library name -> byte offsets (in the creation code) of the 20-byte placeholders for its address
    const links = {};
    for (const libs of Object.values(c.evm.bytecode.linkReferences || {})) {
      for (const [lib, refs] of Object.entries(libs)) links[lib] = refs.map((r) => r.start);
    }
    if (Object.keys(links).length) artifact.links = links;
    // a linked library's events are emitted at this contract's address: decode them with its ABI
    for (const [libUnit, libs] of Object.entries(c.evm.bytecode.linkReferences || {})) {
      for (const lib of Object.keys(libs)) {
        for (const e of output.contracts[libUnit][lib].abi) if (e.type === "event") artifact.abi.push(e);
      }
    }
    const words = structWords(c.storageLayout, name);
    if (Object.keys(words).length) artifact.structs = words;
    files[`${name}.json`] = dump(artifact);
  }
}
for (const name of DEPLOYABLE) {
  if (!files[`${name}.json`]) {
    process.stderr.write(`contract ${name} not found in ${SRC_DIR}\n`);
    process.exit(1);
  }
}
const hashes = {};
for (const [unit, s] of Object.entries(sources)) hashes[unit] = sha256(s.content);
for (const [unit, content] of Object.entries(used)) hashes[unit] = sha256(content);
files["manifest.json"] = dump({
  compiler: { name: "solc-js", version: solc.version() },
  openzeppelin: JSON.parse(readFileSync(join(NODE_MODULES, "@openzeppelin/contracts/package.json"), "utf8")).version,
  settings: { evmVersion: SETTINGS.evmVersion, viaIR: SETTINGS.viaIR, optimizer: SETTINGS.optimizer, metadata: SETTINGS.metadata },
  sources: hashes,
  artifacts: Object.fromEntries(Object.entries(files).map(([f, text]) => [f, sha256(text)])),
  runtimeSizes: sizes,
});

if (check) {
  const stale = [];
  for (const [file, text] of Object.entries(files)) {
    const path = join(OUT_DIR, file);
    if (!existsSync(path) || readFileSync(path, "utf8") !== text) stale.push(file);
  }
  if (stale.length) {
    process.stderr.write(`stale contract artifacts: ${stale.join(", ")}; run \`make contracts\` and commit din_cli/chain/artifacts\n`);
    process.exit(1);
  }
  process.stderr.write(`artifacts up to date (${Object.keys(files).length} files, solc ${solc.version()})\n`);
} else {
  mkdirSync(OUT_DIR, { recursive: true });
  for (const [file, text] of Object.entries(files)) {
    const path = join(OUT_DIR, file);
    writeFileSync(path + ".tmp", text);
    renameSync(path + ".tmp", path);
  }
  for (const [name, size] of Object.entries(sizes)) process.stderr.write(`${name}: ${size} bytes runtime\n`);
}

// A MicroPython "board" for tests: the real WebAssembly port, under Node.js.
//
// usage: node repl_bridge.mjs <repo root> repl [heap bytes]
//        node repl_bridge.mjs <repo root> run <script.py> [heap bytes]
//
// repl: the port's own event-driven REPL on stdin/stdout as raw bytes, which a test relays to a
//   pty so that mpremote opens it as a serial port. The board starts with an empty filesystem
//   (flashing fills it). What the WebAssembly port leaves to a board's main loop is done here, as
//   a board does it: Ctrl-D in the raw REPL (the REPL returns non-zero) is a soft reboot: print
//   "MPY: soft reboot", start a fresh interpreter and return to the mode it was in (raw REPL).
//   `machine.reset()` (the port has no `machine`; a JS module stands in) is the hard reset: the
//   same fresh interpreter, back at the friendly REPL. The filesystem survives both, as flash
//   does. main.py is NOT run after a reset: its asyncio.run() loop cannot run inside the port's
//   event-driven REPL (the port's asyncio has no run(); it rides the JS event loop).
// run: copy <repo root>/firmware/*.py (and *.mpy: a root compiled with mpy-cross, as `gridpeer
//   flash` installs it) to /firmware and firmware/main.py to /main.py, run the
//   script with top-level await allowed (the port's asyncio runs on Node's event loop), print its
//   output, exit 1 if it raised.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const [root, mode, ...rest] = process.argv.slice(2);
const { loadMicroPython } = await import(
  join(root, "node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs"));

function copyFirmware(mp) {
  const copyTree = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const target = "/" + relative(root, path);
      if (statSync(path).isDirectory()) {
        if (name === "__pycache__") continue;
        mp.FS.mkdir(target);
        copyTree(path);
      } else if (name.endsWith(".py") || name.endsWith(".mpy")) {  // source, or as flashed
        mp.FS.writeFile(target, readFileSync(path));
      }
    }
  };
  mp.FS.mkdir("/firmware");
  copyTree(join(root, "firmware"));
  mp.FS.writeFile("/main.py", readFileSync(join(root, "firmware/main.py")));
}

if (mode === "run") {
  const [script, heapArg] = rest;
  const mp = await loadMicroPython({
    heapsize: Number(heapArg || 262144),
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stderr.write(line + "\n"),
  });
  copyFirmware(mp);
  try {
    await mp.runPythonAsync(readFileSync(script, "utf8"));
  } catch (err) {
    process.stderr.write(String(err) + "\n");
    process.exit(1);
  }
  process.exit(0);
}

// ---- repl mode ----
const heapsize = Number(rest[0] || 262144);
const SKIP = new Set(["/dev", "/proc", "/tmp", "/home"]);
// The port's OSError numbers are Emscripten's (ENOENT = 44), a board's are MicroPython's
// (py/mperrno.h, ENOENT = 2), and mpremote reads "OSError: <n>" with MicroPython's table: without
// this, `fs cp` to a new file fails ("Error with transport ... OSError: 44") because mpremote's
// existence check sees an unknown error instead of "no such file". A traceback is printed inside
// one REPL call, so it is whole within one output batch.
const ERRNO = { 63: 1, 44: 2, 29: 5, 8: 9, 6: 11, 48: 12, 2: 13, 20: 17, 43: 19, 54: 20, 31: 21,
  28: 22, 51: 28, 69: 30, 55: 39 };
let pending = [];
let flushScheduled = false;
function emit(bytes) {
  pending.push(Buffer.from(bytes));
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(() => {
      flushScheduled = false;
      const text = Buffer.concat(pending).toString("latin1").replace(
        /OSError: (\d+)\r\n/g, (all, n) => (n in ERRNO ? `OSError: ${ERRNO[n]}\r\n` : all));
      process.stdout.write(Buffer.from(text, "latin1"));
      pending = [];
    });
  }
}

function snapshot(mp, dir = "/", files = []) {
  for (const name of mp.FS.readdir(dir)) {
    if (name === "." || name === "..") continue;
    const path = (dir === "/" ? "" : dir) + "/" + name;
    if (SKIP.has(path)) continue;
    if (mp.FS.isDir(mp.FS.stat(path).mode)) {
      files.push([path, null]);
      snapshot(mp, path, files);
    } else {
      files.push([path, mp.FS.readFile(path)]);
    }
  }
  return files;
}

let mp = null;
let resetRequested = false;
async function boot(files) {
  mp = await loadMicroPython({ heapsize, linebuffer: false, stdout: emit, stderr: emit });
  for (const [path, data] of files) {
    if (data === null) mp.FS.mkdir(path);
    else mp.FS.writeFile(path, data);
  }
  mp.registerJsModule("machine", { reset: () => { resetRequested = true; } });
  mp.replInit();
}

// Raw-paste mode (Ctrl-E A Ctrl-A at the start of a raw-REPL line): the port's event-driven raw
// REPL implements it by reading the pasted code with the blocking mp_hal_stdin_rx_chr(), which in
// the WebAssembly port has no input source while a character is being processed: it answers
// "R\x01", then spins forever at 100 % CPU. So the bridge answers for the board as a firmware
// without raw-paste does, "R\x00" (understood, not supported), and mpremote falls back to the
// plain raw REPL, which the port handles character by character.
const RAW_PASTE = [0x05, 0x41, 0x01];
let raw = false;  // the REPL is in raw mode
let lineStart = false;  // ...and nothing of the current raw line was typed yet
let held = [];  // a possible raw-paste request, being matched

async function feed(chr) {
  if (raw && lineStart && chr === RAW_PASTE[held.length]) {
    held.push(chr);
    if (held.length === RAW_PASTE.length) {
      held = [];
      emit(Buffer.from("R\x00"));
    }
    return;
  }
  const replay = held.concat([chr]);
  held = [];
  for (const c of replay) await process1(c);
}

async function process1(chr) {
  const exited = await mp.replProcessCharWithAsyncify(chr);
  if (chr === 0x01) raw = true;
  else if (chr === 0x02) raw = false;
  lineStart = raw && (chr === 0x01 || chr === 0x04 || chr === 0x03);
  if (resetRequested) {  // hard reset: the board reboots into the friendly REPL
    resetRequested = false;
    raw = false;
    const files = snapshot(mp);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await boot(files);
  } else if (exited) {  // Ctrl-D on an empty raw line: soft reboot, back into the raw REPL
    const files = snapshot(mp);
    emit(Buffer.from("MPY: soft reboot\r\n"));
    await boot(files);
    await process1(0x01);
  }
}

await boot([]);
let chain = Promise.resolve();
process.stdin.on("data", (data) => {
  for (const chr of data) chain = chain.then(() => feed(chr));
});
process.stdin.on("end", () => chain.then(() => process.exit(0)));

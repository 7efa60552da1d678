// Run the firmware on real MicroPython (the WebAssembly port) under Node.js.
//
// usage: node mp_harness.mjs <repo root> <frames file> <heap bytes>
//
// Copies every .py under <repo root>/firmware and tests/firmware/mp_driver.py into the
// interpreter's filesystem, then runs mp_driver.main() on the frames; the driver's output lines
// go to stdout. A heap the size of an ESP32's free RAM makes "it ran" also mean "it fits".
// Exit status 1 if MicroPython raised.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const [root, framesPath, heapArg] = process.argv.slice(2);
const { loadMicroPython } = await import(
  join(root, "node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs"));

const lines = [];
const mp = await loadMicroPython({
  heapsize: Number(heapArg),
  stdout: (line) => lines.push(line),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copyTree(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const target = "/" + relative(root, path);
    if (statSync(path).isDirectory()) {
      if (name === "__pycache__") continue;
      mp.FS.mkdir(target);
      copyTree(path);
    } else if (name.endsWith(".py")) {
      mp.FS.writeFile(target, readFileSync(path));
    }
  }
}

mp.FS.mkdir("/firmware");
copyTree(join(root, "firmware"));
mp.FS.writeFile("/mp_driver.py", readFileSync(join(root, "tests/firmware/mp_driver.py")));
mp.FS.writeFile("/frames.bin", readFileSync(framesPath));

let status = 0;
try {
  // One top-level call per record: the port collects garbage only between calls (see step()).
  mp.runPython("import mp_driver\nmp_driver.setup('/frames.bin')");
  do {
    mp.runPython("more = mp_driver.step()");
  } while (mp.globals.get("more"));
  mp.runPython("mp_driver.report()");
} catch (err) {
  process.stderr.write(String(err) + "\n");
  status = 1;
}
process.stdout.write(lines.join("\n") + "\n");
process.exit(status);

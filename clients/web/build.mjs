// Bundles the viewer (and the TypeScript client it imports from ../typescript/src) into dist/.
import { copyFileSync, mkdirSync } from "node:fs";
import { build } from "esbuild";

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  outfile: "dist/viewer.js",
  sourcemap: false,
  minify: true,
  logLevel: "warning",
});
copyFileSync("src/index.html", "dist/index.html");

// Bundles the chat page (src/chat.ts, with the TypeScript SDK from sdk/ts)
// into static/app.js and the admin console (src/admin.ts) into
// admin/admin.js; the Go binary embeds both directories. Run by
// scripts/build-web.sh (after npm ci here and in sdk/ts).
import { build } from "esbuild";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "package.json"));

// One copy of the protobuf runtime: the SDK's sources would otherwise take
// theirs from sdk/ts/node_modules and Connect its own from here.
const oneProtobuf = {
  name: "one-protobuf",
  setup(b) {
    b.onResolve({ filter: /^@bufbuild\/protobuf(\/.*)?$/ }, (args) => ({ path: require.resolve(args.path) }));
  },
};

const common = { bundle: true, format: "iife", target: "es2020", platform: "browser", minify: true, legalComments: "none", plugins: [oneProtobuf], logLevel: "warning" };
await build({ ...common, entryPoints: [join(here, "src", "chat.ts")], outfile: join(here, "static", "app.js") });
await build({ ...common, entryPoints: [join(here, "src", "admin.ts")], outfile: join(here, "admin", "admin.js") });

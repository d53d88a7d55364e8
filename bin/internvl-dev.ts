// The CLI from source, without a build: `node --import tsx bin/internvl-dev.ts <command> …` (tests, benchmarks).
import { main } from '../src/apps/cli/main.js';

process.exitCode = await main(process.argv.slice(2));

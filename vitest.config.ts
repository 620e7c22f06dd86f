import { tmpdir } from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // onnxruntime already spreads one session over both cores of the CI machine.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // Derived graphs and fingerprints go to a throwaway cache, not the user's ~/.cache/kvpack.
    env: { KVPACK_CACHE_DIR: path.join(tmpdir(), `kvpack-test-cache-${process.pid}`) },
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'] },
      },
      {
        // Suites that run real ONNX sessions or read the shared model and data folder.
        extends: true,
        test: { name: 'model', include: ['test/model/**/*.test.ts'], globalSetup: ['test/model/global-setup.ts'] },
      },
    ],
  },
});

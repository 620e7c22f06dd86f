import { readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../../common/paths.js';

interface PackageJson {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
}

/** Lists the source files `npm run build` compiles into dist/, which installed users run. */
function shippedSourceFiles(): string[] {
  const config = JSON.parse(readFileSync(path.join(packageRoot, 'tsconfig.build.json'), 'utf8')) as { include: string[] };
  const files: string[] = [];
  const visit = (entry: string) => {
    if (statSync(entry).isDirectory()) {
      for (const name of readdirSync(entry)) visit(path.join(entry, name));
    } else if (entry.endsWith('.ts') && !entry.endsWith('.d.ts')) {
      files.push(entry);
    }
  };
  for (const include of config.include) visit(path.join(packageRoot, include));
  return files;
}

/** Returns the package name of each bare import specifier (`pkg`, `pkg/sub`, `@scope/pkg/sub`). */
function importedPackages(source: string): string[] {
  const specifiers = [...source.matchAll(/(?:\bfrom\s+|\bimport\s+|\bimport\s*\(\s*)'([^'.][^']*)'/g)].map((match) => match[1]);
  return specifiers
    .filter((specifier) => !specifier.startsWith('node:') && !builtinModules.includes(specifier))
    .map((specifier) => specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/'));
}

describe('shipped code dependencies', () => {
  it('imports only packages listed under dependencies', () => {
    const manifest = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as PackageJson;
    const files = shippedSourceFiles();
    expect(files.length).toBeGreaterThan(50);
    const missing = files.flatMap((file) =>
      importedPackages(readFileSync(file, 'utf8'))
        .filter((name) => !(name in manifest.dependencies))
        .map((name) => `${path.relative(packageRoot, file)} imports ${name}${name in manifest.devDependencies ? ' (a devDependency)' : ''}`),
    );
    expect(missing).toEqual([]);
  });

  it('finds the bare imports of a file', () => {
    const source = "import { Bench } from 'tinybench';\nimport * as vl from 'vega-lite/build/x.js';\nimport type { A } from '@scope/pkg/deep';\nimport { b } from './local.js';\nimport fs from 'node:fs';\nconst m = await import('path');\nprogram.command('import');";
    expect(importedPackages(source)).toEqual(['tinybench', 'vega-lite', '@scope/pkg']);
  });
});

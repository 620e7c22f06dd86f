/**
 * Engine speed: decode tokens/s on stories260K and prefill tokens/s at 512 and 2,048 tokens on the
 * ~100M-parameter random Llama shape. Run: npx tsx bench/engine.bench.ts
 */
import { Bench } from 'tinybench';
import { InferenceEngine } from '../inference/engine.js';
import { generateFromPrompt } from '../inference/generate.js';
import { benchModelDir, machineSummary } from './setup.js';

const DECODE_TOKENS = 256;

async function main(): Promise<void> {
  console.log(`Machine: ${machineSummary()}`);
  const stories = await InferenceEngine.load(await benchModelDir('stories260K'));
  const large = await InferenceEngine.load(await benchModelDir('llama-100m'));
  const prompt = (length: number) => Array.from({ length }, (_, i) => 3 + ((i * 7919) % 250));

  const bench = new Bench({ iterations: 5, time: 0, warmup: true, warmupIterations: 1 });
  bench.add(`stories260K decode ${DECODE_TOKENS} tokens`, async () => {
    // A stop set that never matches keeps every run at exactly DECODE_TOKENS tokens.
    await generateFromPrompt(stories, '', { maxTokens: DECODE_TOKENS, stopTokenIds: [] });
  });
  bench.add('llama-100m prefill 512 tokens', async () => {
    await large.forward({ tokens: prompt(512) });
  });
  bench.add('llama-100m prefill 2048 tokens', async () => {
    await large.forward({ tokens: prompt(2048) });
  });
  bench.add('llama-100m decode 32 tokens after 512', async () => {
    const prefill = await large.forward({ tokens: prompt(512) });
    let past = prefill.present;
    for (let i = 0; i < 32; i++) {
      past = (await large.forward({ tokens: [5 + i], past })).present;
    }
  });
  await bench.run();

  const tokensPerRun: Record<string, number> = {
    [`stories260K decode ${DECODE_TOKENS} tokens`]: DECODE_TOKENS,
    'llama-100m prefill 512 tokens': 512,
    'llama-100m prefill 2048 tokens': 2048,
  };
  console.log('\n| task | median ms | min ms | max ms | tokens/s (median) |');
  console.log('|---|---:|---:|---:|---:|');
  for (const task of bench.tasks) {
    const result = task.result;
    if (!result || !('latency' in result)) continue;
    const latency = result.latency;
    const tokens = tokensPerRun[task.name];
    const rate = tokens ? (tokens / (latency.p50 / 1000)).toFixed(0) : '';
    console.log(`| ${task.name} | ${latency.p50.toFixed(1)} | ${latency.min.toFixed(1)} | ${latency.max.toFixed(1)} | ${rate} |`);
  }
  await stories.release();
  await large.release();
}

await main();

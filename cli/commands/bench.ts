import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runSuite, suiteModels, type SuiteModel } from '../../bench/suite/run.js';
import { packageRoot } from '../../common/paths.js';
import { InvalidArgumentError, type Command } from 'commander';
import { KvpackError } from '../../common/errors.js';
import { InferenceEngine } from '../../inference/engine.js';
import { ChunkStore } from '../../ingest/store.js';
import { expectedModelOf, resolveAdapter } from '../../packets/adapter.js';
import { PrefixCache } from '../../packets/prefix-cache.js';
import { strategies, type Strategy } from '../../packets/strategies.js';
import { compareStrategies, type StrategyComparison } from '../../query/compare.js';
import { QueryPipeline } from '../../query/pipeline.js';
import { StoreRetriever } from '../../query/store-retriever.js';
import { modelOptionHelp, resolveModelOption } from '../model-option.js';
import { integerOption } from '../options.js';

interface BenchCommandOptions {
  store: string;
  questions: string;
  model?: string;
  adapter?: string;
  limit: number;
  strategies?: Strategy[];
  topK: number;
  maxTokens: number;
  epicTokens: number;
  threads: number;
  json: boolean;
}

export function registerBenchCommand(program: Command): void {
  const bench = program
    .command('bench')
    .description(
      'Run the benchmark suite: time to first token against context length for every strategy, beside the lower bound ' +
        'and transformers.js; prefill work avoided; fidelity; packet bytes and load throughput; ingest throughput. ' +
        'Writes report.md, results.json and ttft-vs-context.svg. `kvpack bench store` compares the strategies on a store instead.',
    )
    .option('--quick', 'fewer points and repetitions: a smoke run of under a minute on 2 cores, plus the model build on first use', false)
    .option(
      '--out <dir>',
      'folder for the report (default: bench/results in the kvpack folder for a full run; a temporary folder with --quick, --models or --repetitions)',
    )
    .option('--models <list>', `comma-separated models on the time-to-first-token curve among ${suiteModels.join(', ')} (default: all)`, choiceList(suiteModels, 'model'))
    .option('--repetitions <n>', 'measured repetitions per strategy and context size (default: 3, 5 for stories260K, 1 or 2 with --quick)', integerOption(1))
    .action(async (options: SuiteCommandOptions) => {
      const outDir = path.resolve(options.out ?? defaultOutDir(options));
      const output = await runSuite({
        quick: options.quick,
        outDir,
        models: options.models,
        repetitions: options.repetitions,
        command: ['kvpack', ...process.argv.slice(2)].join(' '),
        log: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(`Report: ${output.reportFile}\nPlot: ${output.plotFile}\nData: ${output.jsonFile}\n`);
    });

  bench
    .command('store')
    .description(
      'Compare the reuse strategies on a store: for each question every strategy builds the context from the same retrieved ' +
        'chunks; prints prefill time, time to first token, tokens computed and agreement with full prefill.',
    )
    .requiredOption('--store <dir>', 'store folder built by kvpack ingest, kvpack serve or kvpack demo')
    .requiredOption('--questions <file>', 'questions: a text file with one per line, or JSON Lines with a "question" or "question_text" field')
    .option('--model <dir>', modelOptionHelp('model folder the store was built with'))
    .option('--adapter <file>', "adapter file for the packet strategy, or none (default: the model's shipped adapter when one beat naive concatenation)")
    .option('--limit <n>', 'questions to run at most', integerOption(1), 20)
    .option('--strategies <list>', `comma-separated strategies among ${strategies.join(', ')} (default: all)`, choiceList(strategies, 'strategy'))
    .option('--top-k <n>', 'chunks retrieved per question', integerOption(1), 3)
    .option('--max-tokens <n>', 'greedy answer tokens compared with full prefill', integerOption(1), 16)
    .option('--epic-tokens <n>', 'tokens epic recomputes at the start of each chunk', integerOption(0), 4)
    .option('--threads <n>', 'onnxruntime threads per operator; 0 lets onnxruntime choose', integerOption(0), 0)
    .option('--json', 'print the comparison as JSON', false)
    .action(async (options: BenchCommandOptions) => {
      const rows = await runBench(options);
      process.stdout.write(options.json ? `${JSON.stringify(rows, null, 2)}\n` : formatComparison(rows));
    });
}

interface SuiteCommandOptions {
  quick: boolean;
  out?: string;
  models?: SuiteModel[];
  repetitions?: number;
}

/** Only a run with the default models and repetitions replaces the report in bench/results. */
function defaultOutDir(options: SuiteCommandOptions): string {
  if (options.quick) return path.join(tmpdir(), 'kvpack-bench-quick');
  if (options.models || options.repetitions) return path.join(tmpdir(), 'kvpack-bench');
  return path.join(packageRoot, 'bench', 'results');
}

/** Parses a comma-separated list whose items must all be among `choices`. */
function choiceList<T extends string>(choices: readonly T[], noun: string): (value: string) => T[] {
  return (value) => {
    const names = value.split(',').map((name) => name.trim()).filter(Boolean);
    for (const name of names) {
      if (!(choices as readonly string[]).includes(name)) {
        throw new InvalidArgumentError(`unknown ${noun} ${JSON.stringify(name)}; expected a comma-separated list of ${choices.join(', ')}.`);
      }
    }
    if (names.length === 0) {
      throw new InvalidArgumentError(`expected at least one ${noun}.`);
    }
    return names as T[];
  };
}

async function runBench(options: BenchCommandOptions): Promise<StrategyComparison[]> {
  const questions = readQuestions(options.questions).slice(0, options.limit);
  const modelDir = await resolveModelOption(options.model);
  const engine = await InferenceEngine.load(modelDir, { threads: options.threads });
  let store: ChunkStore | undefined;
  try {
    store = await ChunkStore.open(options.store, {
      mode: 'read',
      model: { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint },
    });
    const resolved = resolveAdapter(options.adapter, expectedModelOf(engine));
    process.stderr.write(`${resolved.reason}\n`);
    const adapter = resolved.vectors;
    const pipeline = new QueryPipeline({ engine, retriever: new StoreRetriever(store), packets: store.packets, adapter, prefixCache: new PrefixCache(256 << 20) });
    process.stderr.write(`Comparing ${(options.strategies ?? strategies).join(', ')} on ${questions.length} questions...\n`);
    return await compareStrategies(pipeline, questions, {
      strategies: options.strategies ?? [...strategies],
      topK: options.topK,
      maxTokens: options.maxTokens,
      epicTokens: options.epicTokens,
    });
  } finally {
    await store?.close();
    await engine.release();
  }
}

/** Reads questions from a text file (one per line) or JSON Lines (`question` or `question_text`). */
export function readQuestions(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new KvpackError('SOURCE_NOT_FOUND', `Questions file not found: ${file}. Pass a text file with one question per line or a JSON Lines file.`);
  }
  const questions: string[] = [];
  for (const [index, line] of text.split('\n').entries()) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    if (!trimmed.startsWith('{')) {
      questions.push(trimmed);
      continue;
    }
    const record = JSON.parse(trimmed) as Record<string, unknown>;
    const question = record.question ?? record.question_text;
    if (typeof question !== 'string' || !question.trim()) {
      throw new KvpackError('INVALID_ARGUMENT', `${file} line ${index + 1} has no "question" or "question_text" string field.`);
    }
    questions.push(question.trim());
  }
  if (questions.length === 0) {
    throw new KvpackError('INVALID_ARGUMENT', `${file} contains no questions.`);
  }
  return questions;
}

export function formatComparison(rows: StrategyComparison[]): string {
  const lines = [
    '| strategy | questions | prefill ms (median) | first token ms (median) | context tokens | computed | spliced | reused | prefill avoided | first-token KL vs full | top-1 = full | answer = full |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.strategy} | ${row.questions} | ${row.medianPrefillMs.toFixed(1)} | ${row.medianTimeToFirstTokenMs.toFixed(1)} | ` +
        `${row.meanContextTokens.toFixed(0)} | ${row.meanComputedTokens.toFixed(0)} | ${row.meanSplicedTokens.toFixed(0)} | ${row.meanReusedTokens.toFixed(0)} | ` +
        `${(row.meanPrefillAvoided * 100).toFixed(0)}% | ${row.meanFirstTokenKl.toFixed(4)} | ${(row.top1Agreement * 100).toFixed(0)}% | ` +
        `${(row.answerMatch * 100).toFixed(0)}% |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

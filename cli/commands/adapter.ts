import { InvalidArgumentError, type Command } from 'commander';
import cliProgress from 'cli-progress';
import path from 'node:path';
import { KvpackError } from '../../common/errors.js';
import { InferenceEngine } from '../../inference/engine.js';
import {
  ADAPTER_FORMAT_VERSION,
  adapterIdFromFile,
  chooseDefaultVariant,
  expectedModelOf,
  loadAdapter,
  makeAdapterVectors,
  readBareKvAdapter,
  readBareVectors,
  writeAdapterFile,
  type AdapterFile,
} from '../../packets/adapter.js';
import type { AdapterVariant, AdapterVectors } from '../../packets/adapter-vectors.js';
import { evaluateFidelity, gapRecovered, type EvaluatedStrategy, type FidelityReport } from '../../packets/training/fidelity.js';
import { evaluateHeldOut, loadHeldOutSets, type HeldOutSet } from '../../packets/training/held-out.js';
import type { TrainingData } from '../../packets/training/pipeline.js';
import { loadOrBuildDataset, type DocumentSource } from '../../packets/training/samples.js';
import type { AdapterInit } from '../../packets/training/train.js';
import { modelOptionHelp, resolveModelOption } from '../model-option.js';
import { collect, integerOption, numberOption } from '../options.js';

interface TrainCommandOptions {
  model?: string;
  corpus: string[];
  variant: AdapterVariant | 'both';
  header: number;
  trailer: number;
  steps: number;
  batch: number;
  lr: number;
  weightDecay: number;
  schedule: 'constant' | 'cosine';
  init: AdapterInit;
  initFrom?: string;
  firstSlot: boolean;
  seed: number;
  trainSamples: number;
  trainChunks: number[];
  validationSamples: number;
  testSamples: number;
  chunks: number[];
  evalEvery: number;
  patience: number;
  id?: string;
  out: string;
}

function chunkList(value: string): number[] {
  const counts = value.split(',').map((part) => Number(part.trim()));
  if (counts.length === 0 || counts.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new InvalidArgumentError(`expected comma-separated chunk counts such as 2,3,4, got ${JSON.stringify(value)}.`);
  }
  return counts;
}

function variantOption(allowBoth: boolean): (value: string) => AdapterVariant | 'both' {
  return (value: string) => {
    const allowed = allowBoth ? ['reference', 'conditioned', 'conditioned-kv', 'both'] : ['reference', 'conditioned', 'conditioned-kv'];
    if (!allowed.includes(value)) {
      throw new InvalidArgumentError(`expected ${allowed.join(', ')}, got ${JSON.stringify(value)}.`);
    }
    return value as AdapterVariant | 'both';
  };
}

export function registerAdapterCommands(program: Command): void {
  const adapter = program
    .command('adapter')
    .description('Train, evaluate and import KV packet adapters (learned vectors that make spliced packets closer to a full prefill).');

  adapter
    .command('train')
    .description(
      'Distill adapter vectors: the teacher is a full prefill of the concatenated chunks plus a prompt, the student the packet ' +
        'splice; the loss is KL(teacher || student) over 16 greedy answer tokens. Without --corpus the model samples its own stories.',
    )
    .option('--model <dir>', modelOptionHelp())
    .option('--corpus <path>', 'training text: plain text (documents separated by blank lines) or JSONL with a text field (repeatable)', collect, [])
    .option(
      '--variant <name>',
      'reference (header and trailer stay in the packet), conditioned (header vectors condition the chunk, then are dropped), ' +
        'conditioned-kv (a header of learned keys and values per layer, trained after a conditioned header), or both (reference and conditioned)',
      variantOption(true),
      'conditioned-kv',
    )
    .option('--no-first-slot', 'conditioned-kv only: train one header for every chunk instead of a second one for the chunk right after the preamble (halves adapter packet storage)')
    .option('--init-from <file>', 'conditioned-kv only: start from the cache of this conditioned adapter\'s header instead of training one first')
    .option('--header <n>', 'header vectors (for conditioned-kv, header entries per layer)', integerOption(1), 8)
    .option('--trailer <n>', 'trailer vectors (reference variant only)', integerOption(0), 8)
    .option('--steps <n>', 'optimizer steps', integerOption(1), 340)
    .option('--batch <n>', 'samples per step', integerOption(1), 8)
    .option('--lr <x>', 'peak AdamW learning rate', numberOption(0), 0.02)
    .option('--weight-decay <x>', 'AdamW decoupled weight decay', numberOption(0), 0)
    .option('--schedule <name>', 'learning-rate schedule: constant, or cosine (10-step warm-up, decay to 10%)', scheduleOption, 'cosine')
    .option('--init <name>', 'initial vectors: bos (the BOS embedding plus noise) or random (small noise)', initOption, 'bos')
    .option('--seed <n>', 'seed of the initial vectors and the batch order', integerOption(0), 1)
    .option('--train-samples <n>', 'training samples', integerOption(1), 400)
    .option('--train-chunks <list>', 'chunks per training sample; a list mixes counts', chunkList, [2, 3, 4])
    .option('--validation-samples <n>', 'validation samples (2, 3 and 4 chunks) that pick the best step', integerOption(1), 144)
    .option('--test-samples <n>', 'held-out samples per chunk count for the recorded fidelity and the gate', integerOption(1), 100)
    .option('--chunks <list>', 'held-out chunk counts', chunkList, [2, 3, 4])
    .option('--eval-every <n>', 'steps between validation measurements', integerOption(1), 20)
    .option('--patience <n>', 'stop after this many validation measurements without improvement; 0 never stops early', integerOption(0), 0)
    .option('--id <id>', 'adapter id (lowercase letters, digits, - and _); default from the output file name')
    .requiredOption('--out <file>', 'output adapter file (.safetensors); with --variant both, -reference and -conditioned are added to its name')
    .action(async (options: TrainCommandOptions) => runTrain(options));

  adapter
    .command('eval')
    .description('Measure an adapter on held-out samples against full prefill, next to naive concatenation and EPIC; prints a markdown table.')
    .option('--model <dir>', modelOptionHelp())
    .requiredOption('--adapter <file>', 'adapter file (.safetensors)')
    .option('--corpus <path>', 'held-out text instead of self-sampled stories (repeatable)', collect, [])
    .option('--chunks <list>', 'chunk counts', chunkList, [2, 3, 4])
    .option('--samples <n>', 'held-out samples per chunk count', integerOption(1), 100)
    .option('--epic <n>', 'tokens EPIC recomputes at the start of each chunk; 0 leaves EPIC out', integerOption(0), 4)
    .action(async (options: EvalCommandOptions) => runEval(options));

  adapter
    .command('import')
    .description(
      'Import an adapter trained elsewhere: a safetensors file with F32 tensors header [h, hidden] and trailer [t, hidden], ' +
        'or for conditioned-kv header_keys and header_values [layers, kv_heads, P, head_dim] (and optionally first_header_keys and first_header_values). ' +
        'Runs the held-out evaluation and the fidelity gate, then writes a kvpack adapter file.',
    )
    .option('--model <dir>', modelOptionHelp('model folder the vectors were trained for'))
    .requiredOption('--from <file>', 'safetensors file with the bare vectors')
    .requiredOption(
      '--variant <name>',
      'reference (header and trailer vectors), conditioned (header vectors) or conditioned-kv (header keys and values)',
      variantOption(false),
    )
    .option('--id <id>', 'adapter id; default from the output file name')
    .option('--description <text>', 'where the vectors come from, recorded as the training data', 'imported vectors')
    .option('--test-samples <n>', 'held-out samples per chunk count', integerOption(1), 100)
    .option('--chunks <list>', 'held-out chunk counts', chunkList, [2, 3, 4])
    .requiredOption('--out <file>', 'output adapter file (.safetensors)')
    .action(async (options: ImportCommandOptions) => runImport(options));
}

function scheduleOption(value: string): 'constant' | 'cosine' {
  if (value !== 'constant' && value !== 'cosine') throw new InvalidArgumentError(`expected constant or cosine, got ${JSON.stringify(value)}.`);
  return value;
}

function initOption(value: string): AdapterInit {
  if (value !== 'bos' && value !== 'random') throw new InvalidArgumentError(`expected bos or random, got ${JSON.stringify(value)}.`);
  return value;
}

function documentSource(corpus: string[]): DocumentSource {
  return corpus.length > 0 ? { kind: 'corpus', files: corpus.map((file) => path.resolve(file)) } : { kind: 'self-sampled' };
}

/** Creates a progress bar on a terminal, or writes a line on stderr at every tenth otherwise. */
function progressReporter(label: string): { update(done: number, total: number, detail?: string): void; stop(): void } {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {value}/{total} {detail}`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(done, total, detail = '') {
        if (!started) {
          bar.start(total, 0, { detail });
          started = true;
        }
        bar.setTotal(total);
        bar.update(done, { detail });
      },
      stop: () => started && bar.stop(),
    };
  }
  let lastShare = -1;
  return {
    update(done, total, detail = '') {
      const share = Math.floor((10 * done) / total);
      if (share !== lastShare || done === total) {
        lastShare = share;
        process.stderr.write(`${label}: ${done}/${total} ${detail}\n`);
      }
    },
    stop() {},
  };
}

async function loadTrainingData(engine: InferenceEngine, options: TrainCommandOptions): Promise<TrainingData> {
  const source = documentSource(options.corpus);
  const progress = progressReporter('data');
  try {
    const report = (stage: string, done: number, total: number) => progress.update(done, total, stage);
    const train = await loadOrBuildDataset(
      engine,
      { split: 'train', source, samples: options.trainSamples, chunkCounts: options.trainChunks, seed: options.seed },
      report,
    );
    const validation = await loadOrBuildDataset(engine, { split: 'validation', source, samples: options.validationSamples, chunkCounts: [2, 3, 4], seed: 0 }, report);
    const heldOut = await loadHeldOutSets(engine, { source, chunkCounts: options.chunks, samples: options.testSamples }, report);
    return { train, validation, heldOut };
  } finally {
    progress.stop();
  }
}

async function runTrain(options: TrainCommandOptions): Promise<void> {
  // TensorFlow.js loads only for training, so other commands start fast.
  const { TfDecoder } = await import('../../packets/training/tf-decoder.js');
  const { trainAndEvaluateAdapter } = await import('../../packets/training/pipeline.js');
  const modelDir = await resolveModelOption(options.model);
  const engine = await InferenceEngine.load(modelDir);
  const decoder = await TfDecoder.load(modelDir);
  try {
    const initHeader = initialHeader(options, engine);
    const data = await loadTrainingData(engine, options);
    const variants: AdapterVariant[] = options.variant === 'both' ? ['reference', 'conditioned'] : [options.variant];
    const written: AdapterFile[] = [];
    for (const variant of variants) {
      const out = options.variant === 'both' ? withSuffix(options.out, `-${variant}`) : options.out;
      const id = options.id ? `${options.id}${options.variant === 'both' ? `-${variant}` : ''}` : adapterIdFromFile(out);
      const progress = progressReporter(`train ${variant}`);
      const evaluation = progressReporter(`evaluate ${variant}`);
      let trained;
      try {
        trained = await trainAndEvaluateAdapter(
          engine,
          decoder,
          data,
          {
            id,
            variant,
            headerLength: initHeader ? initHeader.length / engine.arch.hiddenSize : options.header,
            trailerLength: variant === 'reference' ? options.trailer : 0,
            steps: options.steps,
            batchSize: options.batch,
            learningRate: options.lr,
            weightDecay: options.weightDecay,
            schedule: options.schedule,
            init: options.init,
            initHeader,
            firstSlotHeader: variant === 'conditioned-kv' && options.firstSlot,
            seed: options.seed,
            evaluateEvery: options.evalEvery,
            patience: options.patience,
            onStep: (p) =>
              progress.update(p.step, p.steps, `loss ${p.loss.toFixed(4)}${p.validationKl === undefined ? '' : ` validation KL ${p.validationKl.toFixed(4)}`}`),
          },
          (done, total) => evaluation.update(done, total),
        );
      } finally {
        progress.stop();
        evaluation.stop();
      }
      writeAdapterFile(out, trained.vectors, trained.metadata);
      written.push(trained);
      printTrainingSummary(out, trained);
    }
    if (written.length > 1) {
      const decision = chooseDefaultVariant([
        { name: 'naive', variant: 'naive', meanKl: written[0].metadata.fidelity?.naiveMeanKl ?? Number.NaN },
        ...written.map((file) => ({ name: file.metadata.id, variant: file.metadata.variant, meanKl: file.metadata.fidelity?.adapterMeanKl ?? Number.NaN })),
      ]);
      process.stdout.write(`Gate: ${decision.reason}\n`);
    }
  } finally {
    decoder.dispose();
    await engine.release();
  }
}

/** The header vectors of `--init-from`, which must be a conditioned adapter of this model. */
function initialHeader(options: TrainCommandOptions, engine: InferenceEngine): Float32Array | undefined {
  if (options.initFrom === undefined) return undefined;
  if (options.variant !== 'conditioned-kv') {
    throw new KvpackError('INVALID_ARGUMENT', `--init-from applies to --variant conditioned-kv only, got --variant ${options.variant}. Drop --init-from or train conditioned-kv.`);
  }
  const { vectors, metadata } = loadAdapter(options.initFrom, expectedModelOf(engine));
  if (metadata.variant !== 'conditioned') {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `--init-from ${options.initFrom} is a ${metadata.variant} adapter; a conditioned-kv header starts from a conditioned adapter's header vectors.`,
    );
  }
  if (vectors.headerLength !== options.header) {
    process.stdout.write(`Using the ${vectors.headerLength} header vectors of ${options.initFrom}, so --header ${options.header} does not apply.\n`);
  }
  return vectors.header;
}

function describeSize(vectors: AdapterVectors): string {
  if (!vectors.headerKv) return `${vectors.headerLength}+${vectors.trailerLength} vectors`;
  return `${vectors.headerLength} header entries per layer${vectors.firstSlot ? ' and a first-slot header' : ''}`;
}

function printTrainingSummary(out: string, trained: AdapterFile & { result: { steps: number; bestStep: number; durationMs: number } }): void {
  const { metadata, result } = trained;
  const fidelity = metadata.fidelity;
  process.stdout.write(
    `Wrote ${out}: ${metadata.variant} adapter ${metadata.id}, ${describeSize(trained.vectors)}, ` +
      `${result.steps} steps in ${(result.durationMs / 1000).toFixed(0)} s (kept step ${result.bestStep}).\n`,
  );
  if (fidelity) {
    process.stdout.write(`Held-out mean KL: adapter ${fidelity.adapterMeanKl.toFixed(4)}, naive ${fidelity.naiveMeanKl.toFixed(4)}.\n`);
  }
  if (metadata.gate) {
    process.stdout.write(`Gate (${metadata.gate.verdict}): ${metadata.gate.reason}\n`);
  }
}

function withSuffix(file: string, suffix: string): string {
  const extension = path.extname(file);
  return path.join(path.dirname(file), `${path.basename(file, extension)}${suffix}${extension || '.safetensors'}`);
}

interface EvalCommandOptions {
  model?: string;
  adapter: string;
  corpus: string[];
  chunks: number[];
  samples: number;
  epic: number;
}

async function runEval(options: EvalCommandOptions): Promise<void> {
  const engine = await InferenceEngine.load(await resolveModelOption(options.model));
  try {
    const { vectors } = loadAdapter(options.adapter, expectedModelOf(engine));
    const dataProgress = progressReporter('data');
    let sets: HeldOutSet[];
    try {
      sets = await loadHeldOutSets(engine, { source: documentSource(options.corpus), chunkCounts: options.chunks, samples: options.samples }, (stage, done, total) =>
        dataProgress.update(done, total, stage),
      );
    } finally {
      dataProgress.stop();
    }
    const strategies: EvaluatedStrategy[] = [{ kind: 'naive' }, { kind: 'adapter', adapter: vectors }];
    if (options.epic > 0) strategies.splice(1, 0, { kind: 'epic', recompute: options.epic });
    const rows: Array<{ chunks: number; report: FidelityReport; naive: FidelityReport }> = [];
    for (const set of sets) {
      let naive: FidelityReport | undefined;
      for (const strategy of strategies) {
        const report = await evaluateFidelity(engine, set.dataset.samples, strategy);
        naive ??= report;
        rows.push({ chunks: set.chunks, report, naive });
      }
    }
    process.stdout.write(fidelityTable(rows));
  } finally {
    await engine.release();
  }
}

/** Formats fidelity reports as a markdown table, one row per chunk count and strategy. */
export function fidelityTable(rows: ReadonlyArray<{ chunks: number; report: FidelityReport; naive: FidelityReport }>): string {
  const lines = [
    '| chunks | strategy | samples | mean KL | top-1 agreement | exact greedy-16 | matching prefix | gap recovered | recomputed tokens |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const { chunks, report, naive } of rows) {
    lines.push(
      `| ${chunks} | ${report.strategy} | ${report.samples} | ${report.meanKl.toFixed(4)} | ${(report.top1Agreement * 100).toFixed(1)}% | ` +
        `${(report.exactMatch * 100).toFixed(0)}% | ${report.meanMatchingPrefix.toFixed(2)} | ${(gapRecovered(report, naive) * 100).toFixed(0)}% | ` +
        `${report.meanRecomputedTokens.toFixed(1)} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

interface ImportCommandOptions {
  model?: string;
  from: string;
  variant: AdapterVariant;
  id?: string;
  description: string;
  testSamples: number;
  chunks: number[];
  out: string;
}

async function runImport(options: ImportCommandOptions): Promise<void> {
  const engine = await InferenceEngine.load(await resolveModelOption(options.model));
  try {
    const file = await importAdapter(engine, options);
    process.stdout.write(`Wrote ${options.out}: imported ${file.metadata.variant} adapter ${file.metadata.id}.\n`);
    if (file.metadata.gate) process.stdout.write(`Gate (${file.metadata.gate.verdict}): ${file.metadata.gate.reason}\n`);
  } finally {
    await engine.release();
  }
}

/**
 * Imports bare vectors or a bare header cache trained elsewhere: checks their width or KV layout
 * against the model, measures them on held-out samples next to naive concatenation, applies the
 * gate, and writes an adapter file.
 */
export async function importAdapter(
  engine: InferenceEngine,
  options: { from: string; variant: AdapterVariant; out: string; id?: string; description?: string; testSamples: number; chunks: number[]; corpus?: string[] },
): Promise<AdapterFile> {
  const id = options.id ?? adapterIdFromFile(options.out);
  const vectors = readImportedAdapter(engine, options.from, options.variant, id);
  const sets = await loadHeldOutSets(engine, { source: documentSource(options.corpus ?? []), chunkCounts: options.chunks, samples: options.testSamples });
  const { fidelity, gate } = await evaluateHeldOut(engine, vectors, sets);
  const file: AdapterFile = {
    vectors,
    metadata: {
      formatVersion: ADAPTER_FORMAT_VERSION,
      id,
      variant: options.variant,
      modelFingerprint: engine.modelFingerprint,
      hiddenSize: engine.arch.hiddenSize,
      trainingData: `${options.description ?? 'imported vectors'} (from ${path.basename(options.from)})`,
      fidelity,
      gate,
      createdAt: new Date().toISOString(),
    },
  };
  writeAdapterFile(options.out, vectors, file.metadata);
  return file;
}

function readImportedAdapter(engine: InferenceEngine, file: string, variant: AdapterVariant, id: string): AdapterVectors {
  if (variant === 'conditioned-kv') {
    return readBareKvAdapter(id, file, engine.layout);
  }
  const { header, trailer } = readBareVectors(file, variant, engine.arch.hiddenSize);
  return makeAdapterVectors(id, variant, header, trailer, engine.arch.hiddenSize);
}

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hotpotqaFile } from '../../cli/demo-corpus.js';
import { writeFileAtomic } from '../../common/fs-atomic.js';
import { findSharedDir } from '../../common/paths.js';
import { InferenceEngine } from '../../inference/engine.js';
import { resolveDefaultModel } from '../../inference/default-model.js';
import { expectedModelOf, resolveAdapter } from '../../packets/adapter.js';
import { benchModelDir, machineSummary } from '../setup.js';
import { measureFidelity } from './fidelity.js';
import { measureIngestRate } from './ingest-rate.js';
import { renderReport } from './markdown.js';
import { measurePacketIo } from './packet-io.js';
import { renderTtftPlot } from './plot.js';
import type { ReportSection, SuitePartOptions } from './report-types.js';
import { plotPanels, ttftSections } from './ttft-report.js';
import { measureTtft, type TtftModelPlan, type TtftModelResult } from './ttft.js';

export const suiteModels = ['stories260K', 'llama-100m', 'llama-350m'] as const;
export type SuiteModel = (typeof suiteModels)[number];

export interface SuiteOptions {
  quick: boolean;
  /** Folder for report.md, results.json and ttft-vs-context.svg. */
  outDir: string;
  /** Models on the time-to-first-token curve. Default: all in full mode, stories260K and llama-100m in quick mode. */
  models?: SuiteModel[];
  /** Measured repetitions per case and point; default 3 (5 for stories260K), 1 in quick mode. */
  repetitions?: number;
  /** The command line, for the report. */
  command: string;
  log: (line: string) => void;
}

export interface SuiteOutput {
  reportFile: string;
  plotFile: string;
  jsonFile: string;
}

const EPIC_TOKENS = 4;

/**
 * Runs the benchmark suite and writes its report: time to first token against context length
 * per strategy (with the lower bound and transformers.js), prefill work, kvpack's overhead,
 * fidelity, packet bytes and load throughput, and ingest throughput.
 */
export async function runSuite(options: SuiteOptions): Promise<SuiteOutput> {
  const scratchDir = mkdtempSync(path.join(tmpdir(), 'kvpack-bench-'));
  const part: SuitePartOptions = { quick: options.quick, scratchDir, log: options.log };
  try {
    const plans = await ttftPlans(options);
    const ttft: TtftModelResult[] = [];
    for (const plan of plans) ttft.push(await measureTtft(plan, { ...part, epicTokens: EPIC_TOKENS }));
    const sections: ReportSection[] = [...ttftSections(ttft, repetitionText(plans))];
    const hotpotqa = hotpotqaMissing();
    sections.push(...(await storiesSections(part, hotpotqa)));
    sections.push(hotpotqa ? skippedSection('Packet size and load throughput', hotpotqa) : await packetIoSection(part));
    return await writeOutputs(options, ttft, sections);
  } finally {
    rmSync(scratchDir, { recursive: true, force: true });
  }
}

async function ttftPlans(options: SuiteOptions): Promise<TtftModelPlan[]> {
  const models = options.models ?? (options.quick ? ['stories260K', 'llama-100m'] : [...suiteModels]);
  const plans: TtftModelPlan[] = [];
  for (const name of models) {
    const modelDir = name === 'stories260K' ? await resolveDefaultModel() : await benchModelDir(name);
    plans.push({ name, modelDir, ...curve(name, options.quick), ...(options.repetitions ? { repetitions: options.repetitions } : {}) });
  }
  return plans;
}

/** Context sizes per model: stories260K stays within its 512 positions; the random shapes go to 8K (4K for 350M). */
function curve(name: SuiteModel, quick: boolean): Omit<TtftModelPlan, 'name' | 'modelDir'> {
  if (name === 'stories260K') {
    const points = [2, 4, 6].map((chunks) => ({ chunks, chunkTokens: 64 }));
    return { points, repetitions: quick ? 2 : 5, peerMaxContext: 512 };
  }
  const wide = [2, 4, 8, 16].map((chunks) => ({ chunks, chunkTokens: 256 }));
  if (quick) {
    return { points: wide.slice(0, 2), repetitions: 1, peerMaxContext: 1200 };
  }
  if (name === 'llama-100m') {
    // NOTE: transformers.js prefills the whole prompt in one call: at 8,192 tokens on this shape it took 8.5 GiB and 76 s.
    return { points: [...wide, { chunks: 16, chunkTokens: 512 }], repetitions: 3, peerMaxContext: 4500 };
  }
  return { points: wide, repetitions: 3, peerMaxContext: 2500 };
}

function repetitionText(plans: readonly TtftModelPlan[]): string {
  return plans.map((plan) => `${plan.repetitions} repetition${plan.repetitions === 1 ? '' : 's'} (${plan.name})`).join(', ');
}

/** Fidelity and ingest throughput, both on stories260K: the one model with trained weights. */
async function storiesSections(part: SuitePartOptions, hotpotqaMissing: string | undefined): Promise<ReportSection[]> {
  const modelDir = await resolveDefaultModel();
  const engine = await InferenceEngine.load(modelDir);
  try {
    const resolved = resolveAdapter(undefined, expectedModelOf(engine));
    part.log('stories260K: fidelity per strategy');
    const fidelity = await measureFidelity(engine, { ...part, adapter: resolved.vectors, adapterDescription: resolved.reason });
    if (hotpotqaMissing) {
      return [fidelity, skippedSection('Ingest throughput against raw prefill', hotpotqaMissing)];
    }
    part.log('stories260K: ingest throughput');
    const ingest = await measureIngestRate(engine, modelDir, { ...part, paragraphs: part.quick ? 40 : 400 });
    return [fidelity, ingest];
  } finally {
    await engine.release();
  }
}

/** Explains why the parts that read HotpotQA text cannot run, or returns undefined when they can. */
function hotpotqaMissing(): string | undefined {
  const shared = findSharedDir();
  if (shared && existsSync(hotpotqaFile(shared))) {
    return undefined;
  }
  return (
    'Not measured in this run: it reads HotpotQA paragraphs from the shared assets folder, which was not found ' +
    '(set KVPACK_SHARED_DIR to the folder that contains data/hotpotqa/dev_subsampled.jsonl).'
  );
}

function skippedSection(title: string, reason: string): ReportSection {
  return { title, intro: [reason], tables: [] };
}

async function packetIoSection(part: SuitePartOptions): Promise<ReportSection> {
  const engine = await InferenceEngine.load(await benchModelDir('llama-100m'));
  try {
    part.log('llama-100m: packet bytes and load throughput');
    return await measurePacketIo(engine, { ...part, chunkTokens: 256 });
  } finally {
    await engine.release();
  }
}

async function writeOutputs(options: SuiteOptions, ttft: readonly TtftModelResult[], sections: readonly ReportSection[]): Promise<SuiteOutput> {
  await mkdir(options.outDir, { recursive: true });
  const output: SuiteOutput = {
    reportFile: path.join(options.outDir, 'report.md'),
    plotFile: path.join(options.outDir, 'ttft-vs-context.svg'),
    jsonFile: path.join(options.outDir, 'results.json'),
  };
  const svg = await renderTtftPlot({ title: 'Time to first token against context length', panels: plotPanels(ttft) });
  const preface = [
    `![Time to first token against context length](${path.basename(output.plotFile)})`,
    options.quick ? 'Quick mode: fewer points and repetitions; a smoke run, not figures to quote.' : 'Full mode.',
  ];
  const report = renderReport(
    { title: 'kvpack benchmark suite', machine: machineSummary(), command: options.command, date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', preface },
    sections,
  );
  writeFileAtomic(output.plotFile, svg);
  writeFileAtomic(output.reportFile, report);
  writeFileAtomic(output.jsonFile, `${JSON.stringify({ machine: machineSummary(), command: options.command, quick: options.quick, ttft, sections }, null, 2)}\n`);
  return output;
}

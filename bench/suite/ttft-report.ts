import type { Strategy } from '../../packets/strategies.js';
import type { ReportSection, ReportTable } from './report-types.js';
import { formatMs, formatTiming } from './stats.js';
import { ttftCases, type PointResult, type TtftCase, type TtftModelResult } from './ttft.js';

const strategyColumns: Strategy[] = ['full', 'prefix', 'naive', 'epic', 'packet'];

/** Builds the report's sections on time to first token, prefill work and kvpack's overhead. */
export function ttftSections(results: readonly TtftModelResult[], repetitions: string): ReportSection[] {
  return [timeSection(results, repetitions), workSection(results), overheadSection(results)];
}

function timeSection(results: readonly TtftModelResult[], repetitions: string): ReportSection {
  return {
    title: 'Time to first token against context length',
    intro: [
      'Each row is one context size: a preamble (BOS and the instruction), `chunks` retrieved chunks of real text ' +
        '(this project\'s README and docs), and a question. Every case answers the same new questions over the same ' +
        `chunks, in a rotating order, after one warm-up round; cells are the median time in ms from the question to ` +
        `the first token's logits, with the range over ${repetitions} in brackets.`,
      'Packet strategies read their packets from a real packet store on disk with its memory cache off (the operating ' +
        'system\'s page cache stays warm), check both checksums, decode float16 to float32, re-rotate keys and splice. ' +
        '`question only` is the lower bound no reuse strategy can beat: the question prefilled over preamble and ' +
        'chunk entries already assembled in memory. `transformers.js` is @huggingface/transformers generating one token ' +
        'over the full prompt from the same model folder.',
      ...results.map((result) => `${result.name}: ${(result.parameters / 1e6).toFixed(1)}M parameters, ${result.maxPositions} positions; packet splices ${result.adapterNote}; epic recomputes ${result.epicTokens} tokens per chunk.`),
    ],
    tables: results.map(timeTable),
    notes: [
      '`full ÷ packet` is how many times sooner the first token comes with packets than with a full prefill.',
      `transformers.js prefills the whole prompt in one onnxruntime call, whose attention scores grow with the square of ` +
        `the context, so it runs only up to ${results.map((result) => `${result.peerMaxContext} tokens on ${result.name}`).join(', ')}; ` +
        '"—" marks the sizes beyond.',
    ],
  };
}

function timeTable(result: TtftModelResult): ReportTable {
  const caseColumns = ttftCases.filter((name) => result.points.some((point) => point.timings[name]));
  return {
    columns: [`${result.name}: context tokens`, 'chunks × tokens', ...caseColumns.map(caseTitle), 'full ÷ packet'],
    rows: result.points.map((point) => [
      String(point.contextTokens),
      `${point.point.chunks} × ${point.point.chunkTokens}`,
      ...caseColumns.map((name) => (point.timings[name] ? formatTiming(point.timings[name]) : '—')),
      ratio(point, 'full', 'packet'),
    ]),
  };
}

function workSection(results: readonly TtftModelResult[]): ReportSection {
  return {
    title: 'Prefill work per strategy',
    intro: [
      'Tokens each strategy ran through the model at query time (measured), and the share of a full prefill\'s FLOPs it ' +
        'did not run (computed from the shapes: projections, MLP and attention over every attended entry, plus the ' +
        'output head for the first token). Packet prefill at ingestion is paid once per chunk and not counted here.',
    ],
    tables: results.map((result) => ({
      columns: [
        `${result.name}: context tokens`,
        'full GFLOPs',
        ...strategyColumns.map((name) => `${name}: computed`),
        ...strategyColumns.filter((name) => name !== 'full').map((name) => `${name}: FLOPs avoided`),
      ],
      rows: result.points.map((point) => [
        String(point.contextTokens),
        (point.flops.full / 1e9).toFixed(1),
        ...strategyColumns.map((name) => String(point.computedTokens[name] ?? '—')),
        ...strategyColumns.filter((name) => name !== 'full').map((name) => `${(100 * (1 - point.flops[name] / point.flops.full)).toFixed(1)}%`),
      ]),
    })),
    notes: [
      'Every strategy but `full` finds the preamble in its prefix cache. Each query starts with a prefix cache that ' +
        'holds only the preamble, as for chunks that no earlier query placed in the same order; a query that repeats an ' +
        "earlier query's chunks in the same order lets `prefix` reuse them all, and `prefix` then costs about what `packet` does.",
    ],
  };
}

function overheadSection(results: readonly TtftModelResult[]): ReportSection {
  return {
    title: "kvpack's overhead over the lower bound",
    intro: [
      "Where `packet`'s time to first token goes (medians): reading, checking and decoding packets from the store, " +
        're-rotating and splicing them, and the question\'s prefill, against the lower bound.',
    ],
    tables: results.map((result) => ({
      columns: [`${result.name}: context tokens`, 'packet ms', 'load ms', 'splice ms', 'question prefill ms', 'lower bound ms', 'overhead ms', 'overhead share'],
      rows: result.points.map((point) => {
        const packet = point.timings.packet?.median ?? NaN;
        const bound = point.timings['question only']?.median ?? NaN;
        return [
          String(point.contextTokens),
          formatMs(packet),
          formatMs(point.packetParts.loadMs.median),
          formatMs(point.packetParts.spliceMs.median),
          formatMs(point.packetParts.questionMs.median),
          formatMs(bound),
          formatMs(packet - bound),
          `${(100 * (1 - bound / packet)).toFixed(0)}%`,
        ];
      }),
    })),
  };
}

/** Collects each case's points for the plot: median ms against context tokens. */
export function plotPanels(results: readonly TtftModelResult[]) {
  return results.map((result) => ({
    model: result.name,
    series: ttftCases
      .map((name) => ({
        name: caseTitle(name),
        points: result.points.flatMap((point) => (point.timings[name] ? [{ contextTokens: point.contextTokens, ms: point.timings[name].median }] : [])),
      }))
      .filter((series) => series.points.length > 0),
  }));
}

function caseTitle(name: TtftCase): string {
  if (name === 'question only') return 'question only (lower bound)';
  if (name === 'transformers.js') return 'transformers.js (peer)';
  return name;
}

function ratio(point: PointResult, numerator: TtftCase, denominator: TtftCase): string {
  const top = point.timings[numerator]?.median;
  const bottom = point.timings[denominator]?.median;
  return top === undefined || bottom === undefined ? '—' : `${(top / bottom).toFixed(1)}×`;
}

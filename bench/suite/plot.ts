import * as vega from 'vega';
import * as vl from 'vega-lite';
import { KvpackError } from '../../common/errors.js';
import { strategies } from '../../packets/strategies.js';

export interface TtftPoint {
  contextTokens: number;
  /** Time to first token in milliseconds. */
  ms: number;
}

export interface TtftSeries {
  /** Legend label: a reuse strategy, or a reference line such as a lower bound or a peer library. */
  name: string;
  points: TtftPoint[];
}

export interface TtftPanel {
  /** Panel title. */
  model: string;
  series: TtftSeries[];
}

export interface TtftPlotInput {
  title: string;
  panels: TtftPanel[];
}

/** Width of one panel's plot area in pixels. Two panels side by side, with axes and padding, make an SVG about 870 pixels wide. */
const PANEL_WIDTH = 340;
const PANEL_HEIGHT = 240;
const PANELS_PER_ROW = 2;

/** Dash pattern of the series that are not reuse strategies (lower bounds, peers). */
const REFERENCE_DASH = [5, 3];
const SOLID = [1, 0];

/**
 * Renders time to first token against context length as an SVG document: one panel per model,
 * log2 context tokens on x, log milliseconds on y, and one line with points per series. Reuse
 * strategies are solid lines and other series dashed. Throws INVALID_ARGUMENT for an empty plot
 * or a value that a log scale cannot show.
 */
export async function renderTtftPlot(input: TtftPlotInput): Promise<string> {
  validatePlotInput(input);
  const spec = buildSpec(input);
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function validatePlotInput(input: TtftPlotInput): void {
  if (input.panels.length === 0) {
    throw new KvpackError('INVALID_ARGUMENT', `Cannot plot "${input.title}": it has no panels. Pass at least one model with measured series.`);
  }
  const models = new Set<string>();
  for (const panel of input.panels) {
    if (models.has(panel.model)) {
      throw new KvpackError('INVALID_ARGUMENT', `Cannot plot "${input.title}": model "${panel.model}" has two panels. Merge its series into one panel.`);
    }
    models.add(panel.model);
    validatePanel(panel);
  }
}

function validatePanel(panel: TtftPanel): void {
  if (panel.series.length === 0) {
    throw new KvpackError('INVALID_ARGUMENT', `Cannot plot panel "${panel.model}": it has no series. Omit the panel or pass its measurements.`);
  }
  const names = new Set<string>();
  for (const series of panel.series) {
    const where = `series "${series.name}" of panel "${panel.model}"`;
    if (names.has(series.name)) {
      throw new KvpackError('INVALID_ARGUMENT', `Cannot plot ${where}: the panel has two series of that name. Give each series its own name.`);
    }
    names.add(series.name);
    if (series.points.length === 0) {
      throw new KvpackError('INVALID_ARGUMENT', `Cannot plot ${where}: it has no points. Omit the series or pass its measurements.`);
    }
    for (const point of series.points) {
      if (!Number.isInteger(point.contextTokens) || point.contextTokens <= 0) {
        throw new KvpackError(
          'INVALID_ARGUMENT',
          `Invalid context length ${point.contextTokens} in ${where}: the log-scale x axis needs a whole number of tokens, 1 or more.`,
        );
      }
      if (!Number.isFinite(point.ms) || point.ms <= 0) {
        throw new KvpackError(
          'INVALID_ARGUMENT',
          `Invalid time to first token ${point.ms} ms at ${point.contextTokens} context tokens in ${where}: ` +
            'the log-scale y axis needs a positive finite number. Drop the point or fix the measurement.',
        );
      }
    }
  }
}

/** Series names in order of first appearance across the panels, which is the legend order. */
function seriesNamesOf(input: TtftPlotInput): string[] {
  return [...new Set(input.panels.flatMap((panel) => panel.series.map((series) => series.name)))];
}

function buildSpec(input: TtftPlotInput): vl.TopLevelSpec {
  const names = seriesNamesOf(input);
  const strategyNames: readonly string[] = strategies;
  const dashes = names.map((name) => (strategyNames.includes(name) ? SOLID : REFERENCE_DASH));
  // One legend for both channels: vega-lite merges legends of channels that encode the same field.
  const legend = {
    title: null,
    orient: 'bottom' as const,
    direction: 'horizontal' as const,
    columns: input.panels.length > 1 ? 3 : 2,
    labelLimit: 0,
    labelFontSize: 12,
    symbolType: 'stroke',
    symbolStrokeWidth: 2,
    symbolSize: 300,
  };
  const rows = input.panels.flatMap((panel) =>
    panel.series.flatMap((series) => series.points.map((point) => ({ model: panel.model, series: series.name, ...point }))),
  );

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: input.title, anchor: 'start', fontSize: 15, offset: 12 },
    data: { values: rows },
    columns: PANELS_PER_ROW,
    concat: input.panels.map((panel) => ({
      title: { text: panel.model, fontSize: 13 },
      transform: [{ filter: { field: 'model', equal: panel.model } }],
      width: PANEL_WIDTH,
      height: PANEL_HEIGHT,
      mark: { type: 'line', point: true, strokeWidth: 2 },
      encoding: {
        x: {
          field: 'contextTokens',
          type: 'quantitative',
          scale: { type: 'log', base: 2, nice: false },
          axis: { values: contextLengthsOf(panel), format: 'd', labelOverlap: true },
          title: 'context tokens (log scale)',
        },
        y: { field: 'ms', type: 'quantitative', scale: { type: 'log' }, title: 'time to first token, ms (log scale)' },
        color: { field: 'series', type: 'nominal', sort: names, scale: { domain: names, scheme: 'category10' }, legend },
        strokeDash: { field: 'series', type: 'nominal', sort: names, scale: { domain: names, range: dashes }, legend },
      },
    })),
    resolve: { scale: { x: 'independent', y: 'independent', color: 'shared', strokeDash: 'shared' } },
    config: { background: 'white', font: 'Helvetica, Arial, sans-serif', padding: 12 },
  };
}

/** Returns the panel's distinct context lengths, ascending, as the x ticks, so every measured length is labeled. */
function contextLengthsOf(panel: TtftPanel): number[] {
  const lengths = new Set(panel.series.flatMap((series) => series.points.map((point) => point.contextTokens)));
  return [...lengths].sort((a, b) => a - b);
}

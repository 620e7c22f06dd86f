import { describe, expect, it } from 'vitest';
import { renderTtftPlot, type TtftPanel, type TtftPlotInput } from '../../../bench/suite/plot.js';
import { rejection } from '../../helpers/errors.js';

const SERIES_NAMES = ['full', 'prefix', 'naive', 'epic', 'packet', 'question only (lower bound)', 'transformers.js (peer)'];

function panel(model: string, contextLengths: number[]): TtftPanel {
  return {
    model,
    series: SERIES_NAMES.map((name, rank) => ({
      name,
      points: contextLengths.map((contextTokens) => ({ contextTokens, ms: (rank + 1) * contextTokens * 0.05 })),
    })),
  };
}

const twoModels: TtftPlotInput = {
  title: 'Time to first token against context length',
  panels: [panel('stories260K', [96, 160, 288, 480]), panel('llama-100m', [540, 1052, 2076])],
};

/** Returns the first unbalanced tag of an XML document, or undefined when every element closes in order. */
function findUnbalancedTag(xml: string): string | undefined {
  const open: string[] = [];
  for (const match of xml.matchAll(/<(\/?)([A-Za-z][\w:-]*)[^>]*?(\/?)>/g)) {
    const [, closing, name, selfClosing] = match;
    if (selfClosing) continue;
    if (!closing) {
      open.push(name);
    } else if (open.pop() !== name) {
      return name;
    }
  }
  return open.length > 0 ? open[open.length - 1] : undefined;
}

/** Returns the contents of every line-mark group. Vega draws one such group, containing one path, per series and panel. */
function lineMarkGroups(svg: string): string[] {
  return [...svg.matchAll(/<g class="mark-line role-mark[^"]*"[^>]*>(.*?)<\/g>/g)].map((match) => match[1]);
}

describe('renderTtftPlot', () => {
  it('renders a well-formed SVG document', async () => {
    const svg = await renderTtftPlot(twoModels);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(findUnbalancedTag(svg)).toBeUndefined();
  });

  it('labels every series in the legend', async () => {
    const svg = await renderTtftPlot(twoModels);
    const labels = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((match) => match[1]);
    for (const name of SERIES_NAMES) expect(labels).toContain(name);
  });

  it('draws one path per series and panel', async () => {
    const svg = await renderTtftPlot(twoModels);
    const groups = lineMarkGroups(svg);
    expect(groups).toHaveLength(SERIES_NAMES.length * twoModels.panels.length);
    for (const group of groups) expect(group.match(/<path/g)).toHaveLength(1);
  });

  it('titles each panel with its model', async () => {
    const svg = await renderTtftPlot(twoModels);
    const labels = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((match) => match[1]);
    expect(labels).toContain('stories260K');
    expect(labels).toContain('llama-100m');
    expect(labels).toContain('Time to first token against context length');
  });

  it('labels every measured context length on the x axis', async () => {
    const svg = await renderTtftPlot(twoModels);
    const labels = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((match) => match[1]);
    for (const length of [96, 160, 288, 480, 540, 1052, 2076]) expect(labels).toContain(String(length));
  });

  it('has a white background and a fixed width', async () => {
    const svg = await renderTtftPlot(twoModels);
    expect(svg).toMatch(/^<svg[^>]*><rect width="\d+" height="\d+" fill="white"\/>/);
    const width = Number(/^<svg[^>]* width="(\d+)"/.exec(svg)?.[1]);
    expect(width).toBeGreaterThan(600);
    expect(width).toBeLessThanOrEqual(900);
  });

  it('renders a single panel', async () => {
    const svg = await renderTtftPlot({ title: 'one model', panels: [panel('stories260K', [96, 480])] });
    expect(lineMarkGroups(svg)).toHaveLength(SERIES_NAMES.length);
  });

  it('rejects a plot without panels', async () => {
    const error = await rejection(renderTtftPlot({ title: 'empty', panels: [] }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe('Cannot plot "empty": it has no panels. Pass at least one model with measured series.');
  });

  it('rejects a panel without series', async () => {
    const error = await rejection(renderTtftPlot({ title: 'plot', panels: [{ model: 'stories260K', series: [] }] }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe('Cannot plot panel "stories260K": it has no series. Omit the panel or pass its measurements.');
  });

  it('rejects a series without points', async () => {
    const error = await rejection(renderTtftPlot({ title: 'plot', panels: [{ model: 'stories260K', series: [{ name: 'full', points: [] }] }] }));
    expect(error.message).toBe('Cannot plot series "full" of panel "stories260K": it has no points. Omit the series or pass its measurements.');
  });

  it('rejects a zero time on the log scale', async () => {
    const input = { title: 'plot', panels: [{ model: 'llama-100m', series: [{ name: 'packet', points: [{ contextTokens: 540, ms: 0 }] }] }] };
    const error = await rejection(renderTtftPlot(input));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'Invalid time to first token 0 ms at 540 context tokens in series "packet" of panel "llama-100m": ' +
        'the log-scale y axis needs a positive finite number. Drop the point or fix the measurement.',
    );
  });

  it('rejects a NaN time', async () => {
    const input = { title: 'plot', panels: [{ model: 'llama-100m', series: [{ name: 'full', points: [{ contextTokens: 540, ms: Number.NaN }] }] }] };
    const error = await rejection(renderTtftPlot(input));
    expect(error.message).toContain('Invalid time to first token NaN ms at 540 context tokens in series "full"');
  });

  it('rejects a negative context length', async () => {
    const input = { title: 'plot', panels: [{ model: 'stories260K', series: [{ name: 'naive', points: [{ contextTokens: -64, ms: 3 }] }] }] };
    const error = await rejection(renderTtftPlot(input));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'Invalid context length -64 in series "naive" of panel "stories260K": the log-scale x axis needs a whole number of tokens, 1 or more.',
    );
  });

  it('rejects two panels of one model', async () => {
    const error = await rejection(renderTtftPlot({ title: 'plot', panels: [panel('stories260K', [96]), panel('stories260K', [160])] }));
    expect(error.message).toBe('Cannot plot "plot": model "stories260K" has two panels. Merge its series into one panel.');
  });

  it('rejects two series of one name', async () => {
    const points = [{ contextTokens: 96, ms: 2 }];
    const input = { title: 'plot', panels: [{ model: 'stories260K', series: [{ name: 'full', points }, { name: 'full', points }] }] };
    const error = await rejection(renderTtftPlot(input));
    expect(error.message).toBe('Cannot plot series "full" of panel "stories260K": the panel has two series of that name. Give each series its own name.');
  });
});

import type { ReportSection, ReportTable } from './report-types.js';

export interface ReportHeader {
  title: string;
  machine: string;
  command: string;
  date: string;
  /** Paragraphs after the header lines. */
  preface: string[];
}

/** Renders the report as Markdown: header lines, then each section's intro, tables and notes. */
export function renderReport(header: ReportHeader, sections: readonly ReportSection[]): string {
  const lines = [`# ${header.title}`, '', `Machine: ${header.machine}.`, '', `Command: \`${header.command}\`, run ${header.date}.`, ''];
  for (const paragraph of header.preface) lines.push(paragraph, '');
  for (const section of sections) {
    lines.push(`## ${section.title}`, '');
    for (const paragraph of section.intro) lines.push(paragraph, '');
    for (const table of section.tables) lines.push(...renderTable(table), '');
    for (const paragraph of section.notes ?? []) lines.push(paragraph, '');
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

export function renderTable(table: ReportTable): string[] {
  const width = table.columns.length;
  for (const [index, row] of table.rows.entries()) {
    if (row.length !== width) {
      throw new Error(`Table row ${index} has ${row.length} cells for ${width} columns (${table.columns.join(', ')}).`);
    }
  }
  const align = table.columns.map((_, index) => table.align?.[index] ?? (index === 0 ? 'left' : 'right'));
  const escape = (cell: string) => cell.replaceAll('|', '\\|');
  return [
    `| ${table.columns.map(escape).join(' | ')} |`,
    `|${align.map((side) => (side === 'right' ? '---:' : '---')).join('|')}|`,
    ...table.rows.map((row) => `| ${row.map(escape).join(' | ')} |`),
  ];
}

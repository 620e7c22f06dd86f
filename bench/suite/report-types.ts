/** A table of a benchmark report: one header row, string cells, numeric columns right-aligned. */
export interface ReportTable {
  columns: string[];
  /** Per column; default `left` for the first column and `right` for the others. */
  align?: ('left' | 'right')[];
  rows: string[][];
}

/** One section of the suite's report: what was measured, how, and the tables. */
export interface ReportSection {
  title: string;
  /** Paragraphs before the tables: what was measured, on which model, with which settings. */
  intro: string[];
  tables: ReportTable[];
  /** Paragraphs after the tables: how to read them, and gaps. */
  notes?: string[];
}

/** Settings every suite part receives. `quick` trades repetitions and sizes for a run of a few minutes. */
export interface SuitePartOptions {
  quick: boolean;
  /** Scratch folder for stores and temporary files; the part removes what it creates. */
  scratchDir: string;
  /** Progress lines for the terminal (stderr); never part of the report. */
  log: (line: string) => void;
}

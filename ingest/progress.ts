import cliProgress from 'cli-progress';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

/** Work done so far or in total, in the units progress reports. */
export interface ProgressCounts {
  documents: number;
  chunks: number;
  tokens: number;
}

/** Receives ingestion progress: totals once planning is done, then increments. */
export interface ProgressReporter {
  start(totals: ProgressCounts): void;
  advance(delta: ProgressCounts): void;
  stop(): void;
}

export type LogFormat = 'plain' | 'json';

/**
 * Creates a pino logger on stderr, written synchronously so lines survive a killed process: plain
 * text lines for people (`plain`) or pino's JSON lines for log collectors (`json`).
 */
export function createStderrLogger(format: LogFormat = 'plain', level = 'info'): Logger {
  if (format === 'json') {
    return pino({ level, base: undefined }, pino.destination({ fd: 2, sync: true }));
  }
  const stderr = pino.destination({ fd: 2, sync: true });
  const plain = new Writable({
    write(chunk: Buffer, _encoding, done) {
      stderr.write(formatPlainLine(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>));
      done();
    },
  });
  return pino({ level, base: undefined, timestamp: false }, plain);
}

const levelNames: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

/** Formats a pino record as `level: message key=value …`, nested values as compact JSON. */
export function formatPlainLine(record: Record<string, unknown>): string {
  const { level, msg, ...fields } = record;
  const name = levelNames[level as number] ?? String(level);
  const details = Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
  return `${name}: ${String(msg ?? '')}${details.length > 0 ? ` ${details.join(' ')}` : ''}\n`;
}

/** Creates a progress bar (cli-progress) on a terminal, or a reporter of log lines otherwise. */
export function createProgressReporter(logger: Logger, options: { intervalMs?: number; tty?: boolean } = {}): ProgressReporter {
  const tty = options.tty ?? Boolean(process.stderr.isTTY);
  return tty ? new BarProgress() : new LogProgress(logger, options.intervalMs ?? 2000);
}

/** A reporter that reports nothing. */
export const silentProgress: ProgressReporter = { start() {}, advance() {}, stop() {} };

class Tally {
  totals: ProgressCounts = { documents: 0, chunks: 0, tokens: 0 };
  done: ProgressCounts = { documents: 0, chunks: 0, tokens: 0 };
  startedAt = Date.now();

  add(delta: ProgressCounts): void {
    this.done.documents += delta.documents;
    this.done.chunks += delta.chunks;
    this.done.tokens += delta.tokens;
  }

  /** Tokens per second and the estimated seconds left, from the token rate so far. */
  rates(): { tokensPerSecond: number; etaSeconds: number | undefined } {
    const seconds = Math.max(1e-3, (Date.now() - this.startedAt) / 1000);
    const tokensPerSecond = this.done.tokens / seconds;
    const left = this.totals.tokens - this.done.tokens;
    return { tokensPerSecond, etaSeconds: tokensPerSecond > 0 ? left / tokensPerSecond : undefined };
  }
}

class LogProgress implements ProgressReporter {
  readonly #tally = new Tally();
  #lastLog = 0;

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  start(totals: ProgressCounts): void {
    this.#tally.totals = { ...totals };
    this.#tally.startedAt = Date.now();
    this.#lastLog = Date.now();
    this.logger.info({ totals }, 'ingest started');
  }

  advance(delta: ProgressCounts): void {
    this.#tally.add(delta);
    if (Date.now() - this.#lastLog >= this.intervalMs) {
      this.#lastLog = Date.now();
      this.log('ingest progress');
    }
  }

  stop(): void {
    this.log('ingest finished');
  }

  private log(message: string): void {
    const { tokensPerSecond, etaSeconds } = this.#tally.rates();
    this.logger.info(
      { done: this.#tally.done, totals: this.#tally.totals, tokensPerSecond: Math.round(tokensPerSecond), etaSeconds: etaSeconds && Math.round(etaSeconds) },
      message,
    );
  }
}

class BarProgress implements ProgressReporter {
  readonly #tally = new Tally();
  readonly #bar = new cliProgress.SingleBar(
    {
      format: 'ingest [{bar}] {percentage}% | documents {documents} | chunks {chunks} | {tokensPerSecond} tokens/s | ETA {eta_formatted}',
      stream: process.stderr,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );

  start(totals: ProgressCounts): void {
    this.#tally.totals = { ...totals };
    this.#tally.startedAt = Date.now();
    this.#bar.start(Math.max(1, totals.tokens), 0, this.payload());
  }

  advance(delta: ProgressCounts): void {
    this.#tally.add(delta);
    this.#bar.update(this.#tally.done.tokens, this.payload());
  }

  stop(): void {
    this.#bar.stop();
  }

  private payload(): Record<string, string | number> {
    const { done, totals } = this.#tally;
    return {
      documents: `${done.documents}/${totals.documents}`,
      chunks: `${done.chunks}/${totals.chunks}`,
      tokensPerSecond: Math.round(this.#tally.rates().tokensPerSecond),
    };
  }
}

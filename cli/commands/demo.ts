import path from 'node:path';
import type { Command } from 'commander';
import { KvpackError } from '../../common/errors.js';
import { cacheDir, findSharedDir } from '../../common/paths.js';
import { DEFAULT_MODEL_NAME, resolveDefaultModel } from '../../inference/default-model.js';
import { loadServerConfig } from '../../server/config.js';
import type { JobView } from '../../server/jobs.js';
import { startServer, type RunningServer } from '../../server/start.js';
import { demoCorpus, type DemoCorpus } from '../demo-corpus.js';
import { integerOption } from '../options.js';
import { closeOnSignal } from './serve.js';

interface DemoCommandOptions {
  host?: string;
  port?: number;
  questions: number;
  logLevel: string;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'Start kvpack on the default model (stories260K) and a sample corpus, then print a curl command to query it. ' +
        'The first run converts the model and ingests the corpus into the cache folder; later runs reuse both.',
    )
    .option('--host <addr>', 'address to listen on (default 127.0.0.1)')
    .option('--port <n>', 'TCP port; 0 picks a free one (default 8080)', integerOption(0))
    .option('--questions <n>', 'HotpotQA questions whose paragraphs (about ten each) form the corpus', integerOption(1), 30)
    .option('--log-level <level>', 'pino log level of the server log on stderr', 'warn')
    .action(async (options: DemoCommandOptions) => {
      const began = Date.now();
      const say = (line: string) => process.stderr.write(`${line}\n`);
      const model = await resolveDefaultModel({ log: say });
      const corpus = demoCorpus(findSharedDir(), options.questions);
      const store = path.join(cacheDir(), 'demo', `${corpus.name}-${DEFAULT_MODEL_NAME}`);
      const config = loadServerConfig({ env: process.env, flags: { store, model, host: options.host, port: options.port, logLevel: options.logLevel } });
      const running = await startServer(config);
      try {
        say(`Store ${store}: ${corpus.description}.`);
        await ingestCorpus(running, corpus, say);
      } catch (error) {
        await running.close();
        throw error;
      }
      say(`Ready in ${((Date.now() - began) / 1000).toFixed(1)} s.`);
      process.stdout.write(readyMessage(running.url, corpus));
      await closeOnSignal(running, config);
    });
}

/** Submits the corpus as one job and waits for it; documents already in the store are skipped, so later runs return at once. */
async function ingestCorpus(running: RunningServer, corpus: DemoCorpus, say: (line: string) => void): Promise<void> {
  const { jobs } = running.server.context;
  let job: JobView = jobs.submit({ kind: 'documents', documents: corpus.documents });
  let lastReport = 0;
  while (job.status === 'queued' || job.status === 'running') {
    await new Promise((resolve) => setTimeout(resolve, 250));
    job = jobs.get(job.id);
    if (Date.now() - lastReport >= 5000 && job.counts.processed < job.counts.total) {
      lastReport = Date.now();
      say(`Ingesting: ${job.counts.processed}/${job.counts.total} documents, ${job.counts.chunksCreated} chunks.`);
    }
  }
  if (job.status !== 'succeeded') {
    throw new KvpackError(job.error?.code ?? 'INTERNAL_ERROR', `Ingesting the demo corpus ${job.status}: ${job.error?.message ?? 'no error recorded'}.`);
  }
  const { added, updated, unchanged } = job.counts;
  say(`Corpus: ${added + updated} documents ingested, ${unchanged} already in the store.`);
}

/** Formats the lines printed once the demo serves: a ready-to-paste curl command with a question the corpus covers. */
export function readyMessage(url: string, corpus: DemoCorpus): string {
  const body = JSON.stringify({ question: corpus.question, topK: 3, maxTokens: 48 });
  return [
    `kvpack demo serving ${url}. Ask it a question:`,
    '',
    `  curl -s ${url}/v1/query -H 'content-type: application/json' -d ${shellQuote(body)}`,
    '',
    'Add "stream": true to the body for server-sent events. stories260K is a 260K-parameter model trained on',
    "children's stories: its answers are not factual, but the citations, timings and token accounting show",
    'the retrieval and packet splicing at work. Stop with Ctrl-C.',
    '',
  ].join('\n');
}

/** Quotes text for a POSIX shell: single quotes, with each inner quote written as '\''. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

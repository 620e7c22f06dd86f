import type { Command } from 'commander';
import { loadServerConfig, type ServerConfig } from '../../server/config.js';
import { startServer, type RunningServer } from '../../server/start.js';
import { integerOption } from '../options.js';

interface ServeCommandOptions {
  store?: string;
  model?: string;
  adapter?: string;
  host?: string;
  port?: number;
  config?: string;
  logLevel?: string;
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description(
      'Serve a store over HTTP: POST /v1/query, POST/GET/DELETE /v1/documents, GET /v1/jobs/:id, GET /healthz, GET /metrics. ' +
        'Every option can also come from a JSON config file or KVPACK_* environment variables (docs/configuration.md).',
    )
    .option('--store <dir>', 'store folder (created empty when it does not exist)')
    .option('--model <dir>', 'model folder (default: stories260K, converted into the cache folder on first use)')
    .option('--adapter <file>', "adapter file for the packet strategy, or none (default: the model's shipped adapter when one beat naive concatenation)")
    .option('--host <addr>', 'address to listen on (default 127.0.0.1)')
    .option('--port <n>', 'TCP port; 0 picks a free one (default 8080)', integerOption(0))
    .option('--config <file>', 'JSON file of server options (default: $KVPACK_CONFIG)')
    .option('--log-level <level>', 'pino log level: fatal, error, warn, info, debug, trace or silent (default info)')
    .action(async (options: ServeCommandOptions) => {
      const config = loadServerConfig({
        file: options.config,
        env: process.env,
        flags: { store: options.store, model: options.model, adapter: options.adapter, host: options.host, port: options.port, logLevel: options.logLevel },
      });
      const running = await startServer(config);
      process.stdout.write(`kvpack serving ${running.url} (store ${config.store}). Stop with Ctrl-C or SIGTERM.\n`);
      await closeOnSignal(running, config);
    });
}

/**
 * Resolves once SIGTERM or SIGINT shut the server down cleanly: in-flight queries get
 * `shutdownGraceMs` to finish, ingestion stops after the document in flight, the store is closed.
 * A second signal exits at once; the store stays consistent because every document is committed
 * in one transaction.
 */
export function closeOnSignal(running: RunningServer, config: ServerConfig): Promise<void> {
  return new Promise((resolve, reject) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals += 1;
      if (signals > 1) {
        running.logger.warn({ signal }, 'second signal, exiting without waiting');
        process.exit(1);
      }
      running.logger.info({ signal, graceMs: config.shutdownGraceMs }, 'signal received, shutting down');
      running.close().then(() => {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        resolve();
      }, reject);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

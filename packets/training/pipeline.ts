import type { InferenceEngine } from '../../inference/engine.js';
import { KvCache, type KvLayout } from '../../inference/kv-cache.js';
import { ADAPTER_FORMAT_VERSION, makeAdapterVectors, makeKvAdapterVectors, type AdapterFile, type LossCurveSummary } from '../adapter.js';
import { evaluateHeldOut, type HeldOutSet } from './held-out.js';
import type { Dataset } from './samples.js';
import type { TfDecoder } from './tf-decoder.js';
import { trainAdapter, type HeaderKvWeights, type TrainOptions, type TrainResult } from './train.js';

/** The data of one training run. */
export interface TrainingData {
  train: Dataset;
  validation: Dataset;
  heldOut: HeldOutSet[];
}

/**
 * Trains an adapter, measures it on the held-out sets through the ONNX runtime next to naive
 * concatenation, applies the fidelity gate, and returns the vectors with their file metadata.
 */
export async function trainAndEvaluateAdapter(
  engine: InferenceEngine,
  decoder: TfDecoder,
  data: TrainingData,
  options: TrainOptions & { id: string },
  onEvaluation?: (done: number, total: number) => void,
): Promise<AdapterFile & { result: TrainResult }> {
  // 1. Distillation with exact gradients in TensorFlow.js.
  const result = trainInStages(decoder, data, options);

  // 2. Held-out fidelity through the runtime that serves packets, and the gate.
  const vectors = result.headerKv
    ? makeKvAdapterVectors(
        options.id,
        headerKvCache(result.headerKv, engine.layout),
        result.firstSlotHeaderKv ? headerKvCache(result.firstSlotHeaderKv, engine.layout) : undefined,
      )
    : makeAdapterVectors(options.id, options.variant, result.header, result.trailer, engine.arch.hiddenSize);
  const { fidelity, gate } = await evaluateHeldOut(engine, vectors, data.heldOut, onEvaluation);

  // 3. What the file records about the run.
  return {
    vectors,
    result,
    metadata: {
      formatVersion: ADAPTER_FORMAT_VERSION,
      id: options.id,
      variant: options.variant,
      modelFingerprint: engine.modelFingerprint,
      hiddenSize: engine.arch.hiddenSize,
      trainingData: `${data.train.description}; validation: ${data.validation.description}`,
      training: {
        steps: result.steps,
        bestStep: result.bestStep,
        batchSize: options.batchSize,
        learningRate: options.learningRate,
        schedule: options.schedule ?? 'cosine',
        init: describeInit(options),
        seed: options.seed,
        weightDecay: options.weightDecay ?? 0,
        durationMs: Math.round(result.durationMs),
      },
      lossCurve: summarizeLossCurve(result),
      fidelity,
      gate,
      createdAt: new Date().toISOString(),
    },
  };
}

/**
 * Trains the adapter, in two stages for conditioned-kv without `initHeader`: first a conditioned
 * header with the same settings, then the cache of its vectors. A conditioned-kv header trained
 * from the start learns far slower. The result reports both stages' steps and time.
 */
function trainInStages(decoder: TfDecoder, data: TrainingData, options: TrainOptions): TrainResult {
  if (options.variant !== 'conditioned-kv' || options.initHeader) {
    return trainAdapter(decoder, data.train.samples, data.validation.samples, options);
  }
  const total = options.steps * 2;
  const first = trainAdapter(decoder, data.train.samples, data.validation.samples, {
    ...options,
    variant: 'conditioned',
    onStep: (progress) => options.onStep?.({ ...progress, steps: total }),
  });
  const second = trainAdapter(decoder, data.train.samples, data.validation.samples, {
    ...options,
    initHeader: first.header,
    onStep: (progress) => options.onStep?.({ ...progress, step: first.steps + progress.step, steps: total }),
  });
  return { ...second, steps: first.steps + second.steps, bestStep: first.steps + second.bestStep, durationMs: first.durationMs + second.durationMs };
}

function describeInit(options: TrainOptions): string {
  const init = options.init ?? 'bos';
  if (options.variant !== 'conditioned-kv') return init;
  return options.initHeader ? 'cache of given header vectors' : `cache of a conditioned header trained first (${init} init)`;
}

function headerKvCache(weights: HeaderKvWeights, layout: KvLayout): KvCache {
  const length = weights.keys[0].length / (layout.numKvHeads * layout.headDim);
  return new KvCache(layout, length, weights.keys, weights.values);
}

/** Keeps at most 50 evenly spaced points of the loss curve, the last one included. */
export function summarizeLossCurve(result: TrainResult): LossCurveSummary {
  const curve = result.lossCurve;
  const stride = Math.max(1, Math.ceil(curve.length / 50));
  const kept = curve.filter((_, i) => i % stride === stride - 1 || i === curve.length - 1);
  const round = (x: number) => Number(x.toPrecision(5));
  return {
    initialValidationKl: round(result.initialValidationKl),
    bestValidationKl: round(result.bestValidationKl),
    points: kept.map((point) => [point.step, round(point.trainKl), round(point.validationKl)]),
  };
}

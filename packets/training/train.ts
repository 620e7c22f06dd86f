import * as tf from '@tensorflow/tfjs-core';
import { performance } from 'node:perf_hooks';
import { KvpackError } from '../../common/errors.js';
import { SeededRandom } from '../../common/random.js';
import type { AdapterVariant } from '../adapter-vectors.js';
import { shuffle } from './samples.js';
import type { FidelitySample } from './samples-types.js';
import type { LayerKv, TfDecoder } from './tf-decoder.js';
import { distillationLoss, studentLogits, type StudentAdapter } from './tf-student.js';

/**
 * Self-supervised distillation of adapter vectors: AdamW on the header (and trailer) vectors
 * only, with exact gradients of KL(teacher ‖ student) through the TensorFlow.js decoder.
 */

/** Initial adapter vectors: the BOS token's embedding plus small noise (`bos`), or small noise alone (`random`). */
export type AdapterInit = 'bos' | 'random';

export interface TrainOptions {
  variant: AdapterVariant;
  headerLength: number;
  /** Trailer vectors; the conditioned variant takes none. */
  trailerLength: number;
  /** Optimizer steps. */
  steps: number;
  /** Samples per step. */
  batchSize: number;
  /** Peak AdamW learning rate. */
  learningRate: number;
  /** Decoupled weight decay per step, as a fraction of the learning rate (AdamW). Default 0. */
  weightDecay?: number;
  /** Learning-rate schedule over the steps. Default `cosine` (to 10% of the peak). */
  schedule?: 'constant' | 'cosine';
  init?: AdapterInit;
  /**
   * `[headerLength, hidden]` starting header vectors instead of `init` (such as a trained
   * conditioned adapter's, to start a conditioned-kv header from its cache).
   */
  initHeader?: Float32Array;
  /**
   * Conditioned-kv: also train a second header cache for the chunk in the first slot, directly
   * after the preamble. Both start from the same cache. Default false.
   */
  firstSlotHeader?: boolean;
  /** Seed of the initial vectors and the batch order. */
  seed: number;
  /** Steps between validation evaluations; the vectors with the lowest validation KL are returned. */
  evaluateEvery?: number;
  /** Stop after this many evaluations without improvement; 0 never stops early. Default 0. */
  patience?: number;
  onStep?: (progress: StepProgress) => void;
}

export interface StepProgress {
  step: number;
  steps: number;
  /** Mean KL of the batch before the step, in nats. */
  loss: number;
  /** The latest validation KL, once measured. */
  validationKl?: number;
}

/** One point of the loss curve. */
export interface LossPoint {
  step: number;
  /** Mean training-batch KL over the steps since the previous point, in nats. */
  trainKl: number;
  /** Validation KL after this step, in nats. */
  validationKl: number;
}

export interface TrainResult {
  /** `[headerLength, hidden]`; empty for conditioned-kv. */
  header: Float32Array;
  trailer: Float32Array;
  /** The trained header cache of a conditioned-kv adapter. */
  headerKv?: HeaderKvWeights;
  /** The trained first-slot header cache, with `firstSlotHeader`. */
  firstSlotHeaderKv?: HeaderKvWeights;
  /** Steps run (fewer than requested after an early stop). */
  steps: number;
  /** Step whose vectors were kept (lowest validation KL); 0 means the initial vectors. */
  bestStep: number;
  bestValidationKl: number;
  initialValidationKl: number;
  lossCurve: LossPoint[];
  durationMs: number;
}

/** Per layer `[kv_heads * headerLength * head_dim]` keys and values of a conditioned-kv header. */
export interface HeaderKvWeights {
  keys: Float32Array[];
  values: Float32Array[];
}

/** Trains adapter vectors on `train` and selects them on `validation`. */
export function trainAdapter(decoder: TfDecoder, train: readonly FidelitySample[], validation: readonly FidelitySample[], options: TrainOptions): TrainResult {
  validateTrainOptions(options, train.length);
  const began = performance.now();
  const random = new SeededRandom(options.seed);
  const trainable = createTrainable(decoder, options, random);
  const { adapter, variables } = trainable;
  const optimizer = new AdamW(variables.map((v) => v.size), options.learningRate, options.weightDecay ?? 0);
  const evaluateEvery = options.evaluateEvery ?? Math.max(1, Math.floor(options.steps / 20));
  const patience = options.patience ?? 0;

  try {
    const initialValidationKl = meanKl(decoder, validation, adapter, options.batchSize);
    let best = { step: 0, kl: initialValidationKl, ...trainable.snapshot() };
    const lossCurve: LossPoint[] = [];
    const batches = batchOrder(train.length, options.batchSize, random);
    let sinceLastPoint: number[] = [];
    let stale = 0;
    let validationKl: number | undefined;
    let step = 0;
    while (step < options.steps) {
      const batch = batches.next().map((i) => train[i]);
      const loss = trainingStep(decoder, batch, adapter, variables, optimizer, scheduledRate(options, step));
      step++;
      sinceLastPoint.push(loss);

      if (step % evaluateEvery === 0 || step === options.steps) {
        validationKl = meanKl(decoder, validation, adapter, options.batchSize);
        lossCurve.push({ step, trainKl: mean(sinceLastPoint), validationKl });
        sinceLastPoint = [];
        if (validationKl < best.kl) {
          best = { step, kl: validationKl, ...trainable.snapshot() };
          stale = 0;
        } else if (patience > 0 && ++stale >= patience) {
          options.onStep?.({ step, steps: options.steps, loss, validationKl });
          break;
        }
      }
      options.onStep?.({ step, steps: options.steps, loss, validationKl });
    }
    return {
      header: best.header,
      trailer: best.trailer,
      headerKv: best.headerKv,
      firstSlotHeaderKv: best.firstSlotHeaderKv,
      steps: step,
      bestStep: best.step,
      bestValidationKl: best.kl,
      initialValidationKl,
      lossCurve,
      durationMs: performance.now() - began,
    };
  } finally {
    trainable.dispose();
  }
}

/** The student adapter under training, its variables, and a copy of their current values. */
interface Trainable {
  adapter: StudentAdapter;
  variables: tf.Variable[];
  snapshot(): { header: Float32Array; trailer: Float32Array; headerKv?: HeaderKvWeights; firstSlotHeaderKv?: HeaderKvWeights };
  dispose(): void;
}

function createTrainable(decoder: TfDecoder, options: TrainOptions, random: SeededRandom): Trainable {
  const hidden = decoder.arch.hiddenSize;
  const trailerLength = options.variant === 'reference' ? options.trailerLength : 0;
  const init = options.initHeader ?? initialVectors(decoder, options.headerLength + trailerLength, options.init ?? 'bos', random);
  if (options.variant === 'conditioned-kv') {
    return trainableHeaderKv(decoder, tf.tensor2d(init.subarray(0, options.headerLength * hidden), [options.headerLength, hidden]), options.firstSlotHeader ?? false);
  }
  const header = tf.variable(tf.tensor2d(init.subarray(0, options.headerLength * hidden), [options.headerLength, hidden]));
  const trailer = trailerLength > 0 ? tf.variable(tf.tensor2d(init.subarray(options.headerLength * hidden), [trailerLength, hidden])) : undefined;
  const variables = trailer ? [header, trailer] : [header];
  return {
    adapter: { variant: options.variant, header, trailer },
    variables,
    snapshot: () => ({
      header: Float32Array.from(header.dataSync()),
      trailer: trailer ? Float32Array.from(trailer.dataSync()) : new Float32Array(0),
    }),
    dispose: () => tf.dispose(variables),
  };
}

/**
 * Creates a trainable conditioned-kv header: the cache of `vectors` prefilled at positions 0..,
 * with every layer's keys and values trained except the last layer's. A layer's packet entries
 * come from that layer's input, so the last layer's header entries cannot influence any packet
 * and stay fixed. With `firstSlot`, a second cache with the same start serves the first slot.
 */
function trainableHeaderKv(decoder: TfDecoder, vectors: tf.Tensor2D, firstSlot: boolean): Trainable {
  const [length, hidden] = vectors.shape;
  const start = tf.tidy(() => {
    const positions = Int32Array.from({ length }, (_, i) => i);
    const kv = decoder.forward({ embeddings: tf.reshape(vectors, [1, length, hidden]) as tf.Tensor3D, positions }).kv;
    return kv.layers.map((layer) => ({ keys: tf.keep(layer.keys), values: tf.keep(layer.values) }));
  });
  vectors.dispose();
  const last = start.length - 1;
  const trainableCopy = () =>
    start.map((layer, index) => (index === last ? layer : { keys: tf.variable(layer.keys), values: tf.variable(layer.values) }));
  const headerKv = trainableCopy();
  const firstSlotHeaderKv = firstSlot ? trainableCopy() : undefined;
  const variables = [headerKv, ...(firstSlotHeaderKv ? [firstSlotHeaderKv] : [])].flatMap((cache) =>
    cache.slice(0, last).flatMap((layer) => [layer.keys, layer.values]),
  ) as tf.Variable[];
  const copy = (cache: LayerKv[]): HeaderKvWeights => ({
    keys: cache.map((layer) => Float32Array.from(layer.keys.dataSync())),
    values: cache.map((layer) => Float32Array.from(layer.values.dataSync())),
  });
  return {
    adapter: { variant: 'conditioned-kv', headerKv, firstSlotHeaderKv },
    variables,
    snapshot: () => ({
      header: new Float32Array(0),
      trailer: new Float32Array(0),
      headerKv: copy(headerKv),
      firstSlotHeaderKv: firstSlotHeaderKv ? copy(firstSlotHeaderKv) : undefined,
    }),
    dispose: () => tf.dispose([...start.flatMap((layer) => [layer.keys, layer.values]), ...variables]),
  };
}

/**
 * Computes the batch loss and its exact gradients with respect to `variables` (the adapter's
 * header and trailer), then applies one optimizer update. Returns the loss before the update.
 */
export function trainingStep(
  decoder: TfDecoder,
  batch: readonly FidelitySample[],
  adapter: StudentAdapter,
  variables: tf.Variable[],
  optimizer: AdamW,
  rate: number,
): number {
  const { value, grads } = tf.variableGrads(() => distillationLoss(studentLogits(decoder, batch, adapter), batch), variables);
  const loss = value.dataSync()[0];
  const gradients = variables.map((v) => grads[v.name].dataSync());
  tf.dispose([value, ...Object.values(grads)]);
  optimizer.step(variables, gradients, rate);
  return loss;
}

/** Mean distillation KL of the student over samples, forward only, in nats. */
export function meanKl(decoder: TfDecoder, samples: readonly FidelitySample[], adapter: StudentAdapter | undefined, batchSize: number): number {
  if (samples.length === 0) {
    return Number.NaN;
  }
  let total = 0;
  for (let start = 0; start < samples.length; start += batchSize) {
    const batch = samples.slice(start, start + batchSize);
    const loss = tf.tidy(() => distillationLoss(studentLogits(decoder, batch, adapter), batch));
    total += loss.dataSync()[0] * batch.length;
    loss.dispose();
  }
  return total / samples.length;
}

function initialVectors(decoder: TfDecoder, count: number, init: AdapterInit, random: SeededRandom): Float32Array {
  const hidden = decoder.arch.hiddenSize;
  const table = decoder.embeddingTable;
  const rms = Math.sqrt(table.reduce((sum, x) => sum + x * x, 0) / table.length);
  const out = new Float32Array(count * hidden);
  const bos = decoder.arch.bosTokenId;
  for (let i = 0; i < out.length; i++) {
    const base = init === 'bos' && bos !== undefined ? table[bos * hidden + (i % hidden)] : 0;
    out[i] = base + random.nextNormal() * rms * 0.1;
  }
  return out;
}

function scheduledRate(options: TrainOptions, step: number): number {
  if ((options.schedule ?? 'cosine') === 'constant') {
    return options.learningRate;
  }
  const warmup = Math.min(10, Math.floor(options.steps / 10));
  if (step < warmup) {
    return (options.learningRate * (step + 1)) / warmup;
  }
  const progress = (step - warmup) / Math.max(1, options.steps - warmup);
  const floor = 0.1;
  return options.learningRate * (floor + ((1 - floor) * (1 + Math.cos(Math.PI * progress))) / 2);
}

/** Endless shuffled epochs of sample indices, cut into batches. */
function batchOrder(count: number, batchSize: number, random: SeededRandom): { next(): number[] } {
  let order: number[] = [];
  return {
    next() {
      const batch: number[] = [];
      while (batch.length < Math.min(batchSize, count)) {
        if (order.length === 0) {
          order = Array.from({ length: count }, (_, i) => i);
          shuffle(order, random);
        }
        batch.push(order.pop() as number);
      }
      return batch;
    },
  };
}

/** AdamW (Loshchilov and Hutter): Adam moments with bias correction and decoupled weight decay. */
export class AdamW {
  private readonly first: Float32Array[];
  private readonly second: Float32Array[];
  private t = 0;

  constructor(
    sizes: number[],
    readonly learningRate: number,
    readonly weightDecay: number,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly epsilon = 1e-8,
  ) {
    this.first = sizes.map((size) => new Float32Array(size));
    this.second = sizes.map((size) => new Float32Array(size));
  }

  /** Applies one update to the variables given their gradients, at learning rate `rate`. */
  step(variables: tf.Variable[], gradients: ArrayLike<number>[], rate = this.learningRate): void {
    this.t++;
    const correction1 = 1 - Math.pow(this.beta1, this.t);
    const correction2 = 1 - Math.pow(this.beta2, this.t);
    variables.forEach((variable, index) => {
      const values = variable.dataSync().slice();
      const grad = gradients[index];
      const m = this.first[index];
      const v = this.second[index];
      for (let i = 0; i < values.length; i++) {
        m[i] = this.beta1 * m[i] + (1 - this.beta1) * grad[i];
        v[i] = this.beta2 * v[i] + (1 - this.beta2) * grad[i] * grad[i];
        const update = m[i] / correction1 / (Math.sqrt(v[i] / correction2) + this.epsilon);
        values[i] -= rate * (update + this.weightDecay * values[i]);
      }
      tf.tidy(() => variable.assign(tf.tensor(values, variable.shape)));
    });
  }
}

function validateTrainOptions(options: TrainOptions, trainCount: number): void {
  const positiveInteger = (value: number, name: string, min = 1) => {
    if (!Number.isInteger(value) || value < min) {
      throw new KvpackError('INVALID_ARGUMENT', `${name} must be an integer >= ${min}, got ${value}.`);
    }
  };
  positiveInteger(options.headerLength, 'The header length');
  positiveInteger(options.trailerLength, 'The trailer length', 0);
  positiveInteger(options.steps, 'The number of steps');
  positiveInteger(options.batchSize, 'The batch size');
  if (!(options.learningRate > 0)) {
    throw new KvpackError('INVALID_ARGUMENT', `The learning rate must be > 0, got ${options.learningRate}.`);
  }
  if (trainCount === 0) {
    throw new KvpackError('INVALID_ARGUMENT', 'Adapter training needs at least one training sample.');
  }
}

function mean(values: number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

import * as tf from '@tensorflow/tfjs-core';

/**
 * Gradient definitions for the TensorFlow.js kernels that the training decoder uses.
 *
 * The tfjs-core 4.22 package ships its gradient definitions only as unbundled ES modules with
 * extensionless imports, which Node cannot load, and its Node bundle registers none of them. So
 * the training pass registers its own, one per kernel it runs, written from the kernels' math.
 * A kernel that already has a gradient (for example after loading the full `@tensorflow/tfjs`
 * package) keeps it. `test/model/packets/tf-decoder.test.ts` checks the result against finite
 * differences.
 */

type Tensor = tf.Tensor;
type NamedGradients = Record<string, () => Tensor>;

/** Sums `dy` over the axes that broadcasting added or stretched, back to `shape`. */
function reduceToShape(dy: Tensor, shape: number[]): Tensor {
  const axes = tf.backend_util.getReductionAxes(shape, dy.shape);
  const reduced = axes.length > 0 ? tf.sum(dy, axes) : dy;
  return tf.reshape(reduced, shape);
}

/** Swaps the last two axes. */
function transposeLast(x: Tensor): Tensor {
  const perm = x.shape.map((_, i) => i);
  const rank = perm.length;
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  return tf.transpose(x, perm);
}

/** `dy` of a reduction with `keepDims` false, reshaped so it broadcasts against the input. */
function expandReduced(dy: Tensor, inputShape: number[], axis: number | number[] | undefined): Tensor {
  const axes = tf.util.parseAxisParam(axis ?? inputShape.map((_, i) => i), inputShape);
  const kept = inputShape.slice();
  for (const a of axes) kept[a] = 1;
  return tf.reshape(dy, kept);
}

function reducedSize(inputShape: number[], axis: number | number[] | undefined): number {
  const axes = tf.util.parseAxisParam(axis ?? inputShape.map((_, i) => i), inputShape);
  return axes.reduce((size, a) => size * inputShape[a], 1);
}

const single = (dy: Tensor | Tensor[]): Tensor => (Array.isArray(dy) ? dy[0] : dy);

const gradients: tf.GradConfig[] = [
  {
    kernelName: tf.Add,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b]): NamedGradients => ({
      a: () => reduceToShape(single(dy), a.shape),
      b: () => reduceToShape(single(dy), b.shape),
    }),
  },
  {
    kernelName: tf.Sub,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b]): NamedGradients => ({
      a: () => reduceToShape(single(dy), a.shape),
      b: () => reduceToShape(tf.neg(single(dy)), b.shape),
    }),
  },
  {
    kernelName: tf.Multiply,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b]): NamedGradients => ({
      a: () => reduceToShape(tf.mul(single(dy), b), a.shape),
      b: () => reduceToShape(tf.mul(single(dy), a), b.shape),
    }),
  },
  {
    kernelName: tf.RealDiv,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b]): NamedGradients => ({
      a: () => reduceToShape(tf.div(single(dy), b), a.shape),
      b: () => reduceToShape(tf.neg(tf.div(tf.mul(single(dy), a), tf.square(b))), b.shape),
    }),
  },
  {
    // C = op(A) @ op(B) with equal batch axes. The products below avoid the transposed-operand
    // flags, whose kernels are an order of magnitude slower on the WebAssembly backend.
    kernelName: tf.BatchMatMul,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, [a, b], attrs): NamedGradients => {
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const g = single(dy);
      const opA = () => (transposeA ? transposeLast(a) : a);
      const opB = () => (transposeB ? transposeLast(b) : b);
      return {
        // dA = dC @ op(B)^T, transposed back when A entered transposed.
        a: () => {
          const grad = tf.matMul(g, transposeLast(opB()));
          return transposeA ? transposeLast(grad) : grad;
        },
        // dB = op(A)^T @ dC, transposed back when B entered transposed.
        b: () => {
          const grad = tf.matMul(transposeLast(opA()), g);
          return transposeB ? transposeLast(grad) : grad;
        },
      };
    },
  },
  {
    kernelName: tf.Reshape,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]): NamedGradients => ({ x: () => tf.reshape(single(dy), x.shape) }),
  },
  {
    kernelName: tf.ExpandDims,
    inputsToSave: ['input'],
    gradFunc: (dy, [input]): NamedGradients => ({ input: () => tf.reshape(single(dy), input.shape) }),
  },
  {
    kernelName: tf.Identity,
    gradFunc: (dy): NamedGradients => ({ x: () => tf.clone(single(dy)) }),
  },
  {
    kernelName: tf.Transpose,
    gradFunc: (dy, _saved, attrs): NamedGradients => {
      const { perm } = attrs as unknown as { perm: number[] };
      const inverse = new Array<number>(perm.length);
      perm.forEach((axis, i) => (inverse[axis] = i));
      return { x: () => tf.transpose(single(dy), inverse) };
    },
  },
  {
    kernelName: tf.Concat,
    saveAllInputs: true,
    gradFunc: (dy, saved, attrs): NamedGradients => {
      const { axis } = attrs as unknown as { axis: number };
      const dim = tf.util.parseAxisParam(axis, saved[0].shape)[0];
      const sizes = saved.map((t) => t.shape[dim]);
      const parts = tf.split(single(dy), sizes, dim);
      return Object.fromEntries(parts.map((part, i) => [String(i), () => part]));
    },
  },
  {
    kernelName: tf.Slice,
    inputsToSave: ['x'],
    gradFunc: (dy, [x], attrs): NamedGradients => {
      const { begin, size } = attrs as unknown as { begin: number[]; size: number[] };
      const [start, extent] = tf.slice_util.parseSliceParams(x, begin, size);
      const padding = x.shape.map((dim, i) => [start[i], dim - start[i] - extent[i]] as [number, number]);
      return { x: () => tf.pad(single(dy), padding) };
    },
  },
  {
    kernelName: tf.SplitV,
    gradFunc: (dy, _saved, attrs): NamedGradients => {
      const { axis } = attrs as unknown as { axis: number };
      const parts = Array.isArray(dy) ? dy : [dy];
      return { x: () => tf.concat(parts, axis) };
    },
  },
  {
    kernelName: tf.Neg,
    gradFunc: (dy): NamedGradients => ({ x: () => tf.neg(single(dy)) }),
  },
  {
    kernelName: tf.Square,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]): NamedGradients => ({ x: () => tf.mul(single(dy), tf.mul(x, 2)) }),
  },
  {
    kernelName: tf.Sqrt,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]): NamedGradients => ({ x: () => tf.div(single(dy), tf.mul(tf.sqrt(x), 2)) }),
  },
  {
    // d/dx x^(-1/2) = -1/2 x^(-3/2)
    kernelName: tf.Rsqrt,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]): NamedGradients => ({
      x: () => tf.mul(single(dy), tf.mul(tf.div(tf.rsqrt(x), x), -0.5)),
    }),
  },
  {
    kernelName: tf.Reciprocal,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]): NamedGradients => ({ x: () => tf.neg(tf.div(single(dy), tf.square(x))) }),
  },
  {
    kernelName: tf.Exp,
    outputsToSave: [true],
    gradFunc: (dy, [y]): NamedGradients => ({ x: () => tf.mul(single(dy), y) }),
  },
  {
    kernelName: tf.Log,
    inputsToSave: ['x'],
    gradFunc: (dy, [x]): NamedGradients => ({ x: () => tf.div(single(dy), x) }),
  },
  {
    kernelName: tf.Sigmoid,
    outputsToSave: [true],
    gradFunc: (dy, [y]): NamedGradients => ({
      x: () => tf.mul(single(dy), tf.mul(y, tf.sub(1, y))),
    }),
  },
  {
    // dx = y * (dy - sum(dy * y)) along the softmax axis.
    kernelName: tf.Softmax,
    outputsToSave: [true],
    gradFunc: (dy, [y], attrs): NamedGradients => {
      const { dim } = attrs as unknown as { dim: number };
      const g = single(dy);
      return { logits: () => tf.mul(y, tf.sub(g, tf.sum(tf.mul(g, y), dim, true))) };
    },
  },
  {
    kernelName: tf.Sum,
    inputsToSave: ['x'],
    gradFunc: (dy, [x], attrs): NamedGradients => {
      const { axis } = attrs as unknown as { axis: number | number[] };
      return { x: () => tf.mul(expandReduced(single(dy), x.shape, axis), tf.onesLike(x)) };
    },
  },
  {
    kernelName: tf.Mean,
    inputsToSave: ['x'],
    gradFunc: (dy, [x], attrs): NamedGradients => {
      const { axis } = attrs as unknown as { axis: number | number[] };
      const scale = 1 / reducedSize(x.shape, axis);
      return { x: () => tf.mul(expandReduced(single(dy), x.shape, axis), tf.fill(x.shape, scale)) };
    },
  },
];

let registered = false;

/** Registers the gradients above for kernels that have none yet; later calls do nothing. */
export function registerTrainingGradients(): void {
  if (registered) {
    return;
  }
  for (const config of gradients) {
    if (tf.getGradient(config.kernelName) == null) {
      tf.registerGradient(config);
    }
  }
  registered = true;
}

/** Kernels that `registerTrainingGradients` covers, for tests. */
export const trainingGradientKernels: readonly string[] = gradients.map((config) => config.kernelName);

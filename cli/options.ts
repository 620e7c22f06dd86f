import { InvalidArgumentError } from 'commander';

/** Parses an integer option, rejecting fractions, text and values below `min`. */
export function integerOption(min: number): (value: string) => number {
  return (value: string) => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min) {
      throw new InvalidArgumentError(`expected an integer >= ${min}, got ${JSON.stringify(value)}.`);
    }
    return parsed;
  };
}

/** Parses a number option within `[min, max]`. */
export function numberOption(min: number, max = Number.POSITIVE_INFINITY): (value: string) => number {
  return (value: string) => {
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`expected a number in [${min}, ${max}], got ${JSON.stringify(value)}.`);
    }
    return parsed;
  };
}

/** Collects a repeatable option into an array. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

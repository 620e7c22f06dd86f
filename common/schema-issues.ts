/** One failed check of a JSON schema, as ajv reports it. */
export interface SchemaIssue {
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/**
 * Phrases the problem of a failed schema check after its field name, in plain words: "must have
 * at least 1 character", "must be <= 16", "must be of type integer". Keywords without a phrase
 * keep ajv's own message.
 */
export function describeSchemaProblem(issue: SchemaIssue): string {
  const limit = issue.params.limit;
  const plural = (noun: string) => `${noun}${limit === 1 ? '' : 's'}`;
  switch (issue.keyword) {
    case 'minLength':
      return `must have at least ${String(limit)} ${plural('character')}`;
    case 'maxLength':
      return `must have at most ${String(limit)} ${plural('character')}`;
    case 'minItems':
      return `must have at least ${String(limit)} ${plural('item')}`;
    case 'maxItems':
      return `must have at most ${String(limit)} ${plural('item')}`;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return `must be ${String(issue.params.comparison)} ${String(limit)}`;
    case 'pattern':
      return `has an invalid format (expected to match ${String(issue.params.pattern)})`;
    case 'type':
      return `must be of type ${String(issue.params.type)}`;
    default:
      return issue.message ?? 'is invalid';
  }
}

import { fileURLToPath } from 'node:url';

/**
 * The operations guide, as a path on this machine: the package ships docs/ next to dist/, and a
 * checkout has it next to src/, so the CLI can name a file that is there rather than a path relative
 * to a repository the user may never have cloned.
 */
export const OPERATIONS_GUIDE = fileURLToPath(new URL('../../docs/operations.md', import.meta.url));

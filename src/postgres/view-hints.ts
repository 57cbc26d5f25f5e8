// How a PostgreSQL view's commits are announced to other processes, and heard there: a NOTIFY on the
// schema's `views` channel, sent by the commit's own transaction, heard over the event store's LISTEN
// connection. Only hints (see SqlViewBackend.watch): readers still poll, more slowly.
import { randomBytes } from 'node:crypto';
import type { ViewCommitHint, ViewCommitListener, ViewWatch } from '../core/view-backend.js';
import type { HintListener } from './append-listener.js';
import { notifyChannel } from './schema.js';

/**
 * A hint as NOTIFYed: who sent it (`s`, one SqlView object), the view (`v`), the lane (`l`) and
 * positions (`f`, `t`); `x` when a rebuild was swapped in. Never row data or keys: a notification is
 * written to disk and read by every listening process.
 */
interface HintPayload {
  s: string;
  v: string;
  l: string;
  f: number;
  t: number;
  x?: 1;
}

/** Below PostgreSQL's 8000-byte payload limit; a hint that would not fit is not sent (readers poll). */
const MAX_HINT_BYTES = 7000;

/** What a store offers for hearing hints (PostgresEventStore); another store hears none. */
interface HintStore {
  onViewCommitted?: (listener: Required<HintListener>) => () => void;
  readonly listening?: boolean;
}

/** The hints of one SqlView object: those it sends for its commits, and those it hears from others. */
export class ViewHints {
  readonly channel: string;
  readonly #store: HintStore;
  readonly #view: string;
  /** Tells this object's own hints from those of other processes (and other objects of the view). */
  readonly #source = randomBytes(6).toString('hex');

  constructor(store: object, schema: string, view: string) {
    this.#store = store as HintStore;
    this.#view = view;
    this.channel = notifyChannel('views', schema);
  }

  /**
   * The payload announcing that `lane` committed [from, to] (`from = to + 1`: the checkpoint moved
   * over nothing to apply; `swapped`: a rebuild), or undefined when it would not fit a NOTIFY.
   */
  payload(lane: string, from: number, to: number, swapped = false): string | undefined {
    const hint: HintPayload = { s: this.#source, v: this.#view, l: lane, f: from, t: to, ...(swapped ? { x: 1 } : {}) };
    const payload = JSON.stringify(hint);
    return Buffer.byteLength(payload) > MAX_HINT_BYTES ? undefined : payload;
  }

  watch(listener: ViewCommitListener): ViewWatch {
    const store = this.#store;
    if (typeof store.onViewCommitted !== 'function') return { stop: () => undefined, hearing: false };
    const stop = store.onViewCommitted({
      heard: (payload) => {
        const hint = this.#parse(payload);
        if (hint) listener.committed(hint);
      },
      missed: () => listener.missed(),
    });
    return {
      stop,
      get hearing() {
        return store.listening === true;
      },
    };
  }

  /** A hint of this view from another object, or undefined (another view's, this object's own, or garbled). */
  #parse(payload: string): ViewCommitHint | undefined {
    let hint: Partial<HintPayload>;
    try {
      hint = JSON.parse(payload) as Partial<HintPayload>;
    } catch {
      return undefined;
    }
    if (hint.v !== this.#view || hint.s === this.#source) return undefined;
    const { l: lane, f: from, t: to } = hint;
    if (typeof lane !== 'string' || !Number.isSafeInteger(from) || !Number.isSafeInteger(to)) return undefined;
    return { lane, from: from as number, to: to as number, swapped: hint.x === 1 };
  }
}

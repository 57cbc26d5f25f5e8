// The dashboard page's state, shared by its modules (app.js is the entry).

// ---- page state ----------------------------------------------------------------------------------

export const ui = {
  state: null,
  readOnly: true,
  expanded: new Set(),
  runnerRows: new Map(),
  viewRows: new Map(),
  tail: [],
  held: [],
  paused: false,
  lastPosition: -1,
  actions: [],
  actionKeys: new Set(),
  letterSource: '',
  letterSignature: null,
  sourcesSignature: null,
  openLetter: null,
  letterSeq: 0,
  viewerSeq: 0,
  live: null,
  retryTimer: null,
};

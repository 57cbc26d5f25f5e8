// The dashboard's options and handle, free of the CLI's database types: what `eskit/cli` exports for
// openDashboard, so that a program (or a config) type-checks with one adapter's driver types only.

/** Every action attempt, as the action log keeps it (also those refused). */
export interface ActionLogEntry {
  at: string;
  action: string;
  target: string;
  outcome: 'ok' | 'refused' | 'failed';
  detail: string;
  who: { address: string; operator: string | null };
}

/** How a dashboard serves, whatever database it shows. */
export interface DashboardSettings {
  /** Default '127.0.0.1'. Anything but loopback is reachable from other machines (a warning is logged). */
  host?: string;
  /**
   * More names the dashboard answers to, as a browser sends them in the Host header (`ops.example.com`,
   * or `ops.example.com:8443`; a name without a port matches it with any port): the names of a reverse
   * proxy that passes the browser's Host on, or of this machine when bound beyond loopback. Given, the
   * Host check (against DNS rebinding) applies on any address; bound beyond loopback without them,
   * every Host is answered (a warning says so).
   */
  allowedHosts?: readonly string[];
  /** Default 4300; 0: any free port (RunningDashboard.port says which). */
  port?: number;
  /** Default false: read-only, every request but GET and HEAD is refused. */
  allowActions?: boolean;
  /** The actions token; default: env ESKIT_DASHBOARD_TOKEN, else 32 random bytes (base64url). Only with allowActions. */
  token?: string;
  /** How often the database is sampled, in ms. Default 1000. */
  intervalMs?: number;
  /** How many rates a sparkline keeps. Default 180. */
  historySamples?: number;
  /** Called with every action attempt (the CLI prints each as a JSON line). */
  onAction?: (entry: ActionLogEntry) => void;
}

export interface RunningDashboard {
  /** Where to open it: http://<host>:<port>/ (never with the token). */
  url: string;
  /** The actions token; undefined when read-only. */
  token: string | undefined;
  host: string;
  port: number;
  /** Stops sampling, ends the live connections and closes the server (not the database). */
  close(): Promise<void>;
}

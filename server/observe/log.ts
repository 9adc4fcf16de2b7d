/** The process logger: pino, JSON lines on stdout (journald and log shippers read them). */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'imageproxy' } });
}

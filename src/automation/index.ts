export * from './automation.js';

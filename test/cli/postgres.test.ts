import { cliSuite } from './suite.js';

cliSuite('postgres');

import { cliSuite } from './suite.js';

cliSuite('sqlite');

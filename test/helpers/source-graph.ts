// Owns reading the shape of src/ for the architecture test (test/layers.test.ts): which module
// imports which, what layer each module belongs to, and which top-level bindings hold mutable
// state. Parsing goes through the TypeScript compiler's own parser, so comments, strings and
// type-only syntax never fool it. Pure functions over file text, so the rules can be checked
// against small synthetic sources as well as the real tree.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/** One relative import of a source file, resolved to a path under the repository root. */
export interface ImportEdge {
  readonly from: string;
  readonly to: string;
  /** `import type` / `export type`: erased at run time, but still a dependency of the design. */
  readonly typeOnly: boolean;
}

/** A top-level binding that holds state changed after the module loaded. */
export interface ModuleState {
  readonly file: string;
  readonly name: string;
  readonly line: number;
  readonly why: string;
}

/** Every `.ts` source file under `root` (relative to `cwd`), tests and declarations excluded. */
export function sourceFiles(root: string): string[] {
  const files: string[] = [];
  const pending = [root];
  while (pending.length > 0) {
    const directory = pending.pop() as string;
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      const entryPath = path.join(directory, entry.name);
      if (entry.isDirectory()) pending.push(entryPath);
      else if (isSource(entry.name)) files.push(entryPath);
    }
  }
  return files.sort();
}

function isSource(name: string): boolean {
  return name.endsWith('.ts') && !name.endsWith('.test.ts') && !name.endsWith('.d.ts');
}

function parse(file: string, text: string): ts.SourceFile {
  return ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
}

/**
 * The relative imports of one file (static `import`/`export ... from`, and `import()` calls),
 * resolved from the `.js` specifier NodeNext asks for to the `.ts` file that provides it.
 */
export function importsOf(file: string, text: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  const add = (specifier: string, typeOnly: boolean): void => {
    if (!specifier.startsWith('.')) return;
    const resolved = path.normalize(path.join(path.dirname(file), specifier));
    edges.push({ from: file, to: resolved.replace(/\.js$/, '.ts'), typeOnly });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      add(node.moduleSpecifier.text, node.importClause?.isTypeOnly ?? false);
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier !== undefined &&
      ts.isStringLiteral(node.moduleSpecifier)) {
      add(node.moduleSpecifier.text, node.isTypeOnly);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [argument] = node.arguments;
      if (argument !== undefined && ts.isStringLiteral(argument)) add(argument.text, false);
    }
    ts.forEachChild(node, visit);
  };
  visit(parse(file, text));
  return edges;
}

/** The names a file imports from each relative module (value and type names alike). */
export function importedNames(file: string, text: string): Array<{ to: string; names: string[] }> {
  const found: Array<{ to: string; names: string[] }> = [];
  for (const statement of parse(file, text).statements) {
    if (!ts.isImportDeclaration(statement) || !ts.isStringLiteral(statement.moduleSpecifier)) continue;
    const specifier = statement.moduleSpecifier.text;
    if (!specifier.startsWith('.')) continue;
    const clause = statement.importClause;
    const names: string[] = [];
    if (clause?.name !== undefined) names.push('default');
    const bindings = clause?.namedBindings;
    if (bindings !== undefined && ts.isNamespaceImport(bindings)) names.push('*');
    if (bindings !== undefined && ts.isNamedImports(bindings)) {
      for (const element of bindings.elements) names.push((element.propertyName ?? element.name).text);
    }
    const to = path.normalize(path.join(path.dirname(file), specifier)).replace(/\.js$/, '.ts');
    found.push({ to, names });
  }
  return found;
}

/** The names an entry file exports (`export { a, type B } from ...`, `export function f`...). */
export function exportedNames(file: string, text: string): Set<string> {
  const names = new Set<string>();
  for (const statement of parse(file, text).statements) {
    if (ts.isExportDeclaration(statement) && statement.exportClause !== undefined &&
      ts.isNamedExports(statement.exportClause)) {
      for (const element of statement.exportClause.elements) names.add(element.name.text);
      continue;
    }
    const modifiers = ts.canHaveModifiers(statement) ? ts.getModifiers(statement) ?? [] : [];
    if (!modifiers.some((modifier) => modifier.kind === ts.SyntaxKind.ExportKeyword)) continue;
    if (ts.isVariableStatement(statement)) {
      for (const declaration of statement.declarationList.declarations) {
        if (ts.isIdentifier(declaration.name)) names.add(declaration.name.text);
      }
    } else if ((ts.isFunctionDeclaration(statement) || ts.isClassDeclaration(statement) ||
      ts.isInterfaceDeclaration(statement) || ts.isTypeAliasDeclaration(statement)) &&
      statement.name !== undefined) {
      names.add(statement.name.text);
    }
  }
  return names;
}

/** Every import edge of every source file under `root`. */
export function importGraph(root: string): ImportEdge[] {
  return sourceFiles(root).flatMap((file) => importsOf(file, readFileSync(file, 'utf8')));
}

/**
 * The layer a file belongs to: its first directory under `root` (`src/devices/ram-device.ts`
 * is `devices`), or, for a file directly in `root`, the file itself (`errors.ts`).
 */
export function layerOf(root: string, file: string): string {
  const relative = path.relative(root, file);
  const [first = relative] = relative.split(path.sep);
  return first;
}

/** Constructors whose instances hold no state of their own, or are checked for writes below. */
const VALUE_CONSTRUCTORS = new Set([
  'Map', 'Set', 'WeakMap', 'WeakSet', 'Array', 'TextEncoder', 'TextDecoder', 'RegExp',
  'Uint8Array', 'Int8Array', 'Uint16Array', 'Int16Array', 'Uint32Array', 'Int32Array',
  'BigUint64Array', 'BigInt64Array', 'Float32Array', 'Float64Array', 'DataView', 'Date',
]);
/** Methods that change the collection or typed array they are called on. */
const MUTATING_METHODS = new Set([
  'set', 'add', 'delete', 'clear', 'push', 'pop', 'shift', 'unshift', 'splice', 'sort',
  'reverse', 'fill', 'copyWithin',
]);
const ASSIGNMENTS = new Set([
  ts.SyntaxKind.EqualsToken, ts.SyntaxKind.PlusEqualsToken, ts.SyntaxKind.MinusEqualsToken,
  ts.SyntaxKind.AsteriskEqualsToken, ts.SyntaxKind.SlashEqualsToken,
  ts.SyntaxKind.BarEqualsToken, ts.SyntaxKind.AmpersandEqualsToken,
  ts.SyntaxKind.QuestionQuestionEqualsToken, ts.SyntaxKind.BarBarEqualsToken,
  ts.SyntaxKind.AmpersandAmpersandEqualsToken,
]);

/**
 * The module-level mutable state of one file: a top-level `let` or `var`; a top-level `const`
 * holding an instance of a class that is not a plain value (its methods change it); a
 * top-level `const` collection, array, typed array or object whose contents the file changes
 * (`x.set(...)`, `x.push(...)`, `x[i] = ...`, `x.field = ...`, `x.field++`, `delete x.field`).
 */
export function moduleStateOf(file: string, text: string): ModuleState[] {
  const source = parse(file, text);
  const found: ModuleState[] = [];
  const watched = new Map<string, number>();
  const lineOf = (node: ts.Node): number =>
    source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
  for (const statement of source.statements) {
    if (!ts.isVariableStatement(statement)) continue;
    const list = statement.declarationList;
    const isConst = (list.flags & ts.NodeFlags.Const) !== 0;
    for (const declaration of list.declarations) {
      if (!ts.isIdentifier(declaration.name)) continue;
      const name = declaration.name.text;
      const line = lineOf(declaration);
      if (!isConst) {
        found.push({ file, name, line, why: 'a top-level let/var' });
        continue;
      }
      const constructed = constructorName(declaration.initializer);
      if (constructed !== null && !VALUE_CONSTRUCTORS.has(constructed)) {
        found.push({ file, name, line, why: `a top-level instance of ${constructed}` });
        continue;
      }
      watched.set(name, line);
    }
  }
  const reported = new Set<string>();
  const visit = (node: ts.Node): void => {
    const target = mutatedBinding(node);
    if (target !== null && watched.has(target) && !reported.has(target)) {
      reported.add(target);
      found.push({ file, name: target, line: watched.get(target) as number,
        why: `a top-level const changed at line ${lineOf(node)}` });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

function constructorName(initializer: ts.Expression | undefined): string | null {
  let expression = initializer;
  while (expression !== undefined && (ts.isAsExpression(expression) ||
    ts.isSatisfiesExpression(expression) || ts.isParenthesizedExpression(expression))) {
    expression = expression.expression;
  }
  if (expression === undefined || !ts.isNewExpression(expression)) return null;
  return ts.isIdentifier(expression.expression) ? expression.expression.text : '(expression)';
}

/** The top-level name a node changes, when it is a write through that name; else null. */
function mutatedBinding(node: ts.Node): string | null {
  if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression) &&
    MUTATING_METHODS.has(node.expression.name.text)) {
    return rootName(node.expression.expression);
  }
  if (ts.isBinaryExpression(node) && ASSIGNMENTS.has(node.operatorToken.kind)) {
    return accessRoot(node.left);
  }
  if ((ts.isPrefixUnaryExpression(node) || ts.isPostfixUnaryExpression(node)) &&
    (node.operator === ts.SyntaxKind.PlusPlusToken || node.operator === ts.SyntaxKind.MinusMinusToken)) {
    return accessRoot(node.operand);
  }
  if (ts.isDeleteExpression(node)) return accessRoot(node.expression);
  return null;
}

/** `x` for `x.a`, `x[i]`, `x.a.b`; null for a bare name (a const cannot be reassigned). */
function accessRoot(node: ts.Expression): string | null {
  if (ts.isPropertyAccessExpression(node) || ts.isElementAccessExpression(node)) {
    return rootName(node.expression);
  }
  return null;
}

function rootName(node: ts.Expression): string | null {
  let expression = node;
  while (ts.isPropertyAccessExpression(expression) || ts.isElementAccessExpression(expression) ||
    ts.isNonNullExpression(expression) || ts.isParenthesizedExpression(expression)) {
    expression = expression.expression;
  }
  return ts.isIdentifier(expression) ? expression.text : null;
}

/** Cycles of a directed graph given as edges between node names (self-edges ignored). */
export function cyclesOf(edges: Iterable<readonly [string, string]>): string[][] {
  const next = new Map<string, Set<string>>();
  for (const [from, to] of edges) {
    if (from === to) continue;
    if (!next.has(from)) next.set(from, new Set());
    next.get(from)?.add(to);
  }
  // Tarjan's strongly connected components, iterative: every component of more than one node
  // holds at least one cycle, and the component is what a reader needs to untangle.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  let counter = 0;
  for (const start of next.keys()) {
    if (index.has(start)) continue;
    const work: Array<{ node: string; children: string[]; child: number }> = [];
    const enter = (node: string): void => {
      index.set(node, counter);
      low.set(node, counter);
      counter += 1;
      stack.push(node);
      onStack.add(node);
      work.push({ node, children: [...(next.get(node) ?? [])], child: 0 });
    };
    enter(start);
    while (work.length > 0) {
      const frame = work[work.length - 1] as (typeof work)[number];
      if (frame.child < frame.children.length) {
        const child = frame.children[frame.child] as string;
        frame.child += 1;
        if (!index.has(child)) enter(child);
        else if (onStack.has(child)) {
          low.set(frame.node, Math.min(low.get(frame.node) as number, index.get(child) as number));
        }
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent !== undefined) {
        low.set(parent.node, Math.min(low.get(parent.node) as number, low.get(frame.node) as number));
      }
      if (low.get(frame.node) !== index.get(frame.node)) continue;
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop() as string;
        onStack.delete(member);
        component.push(member);
      } while (member !== frame.node);
      if (component.length > 1) components.push(component.sort());
    }
  }
  return components;
}

// @ts-check
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

const SDKS = ['@zilliz/*', 'minio', 'pg', '@grpc/*', 'sharp', 'onnxruntime-node', '@kubernetes/*'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'src/gen/**', 'bench/out/**', 'coverage/**', 'reports/**'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: './tsconfig.check.json', tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    settings: { 'import-x/ignore': ['node_modules'], 'import-x/extensions': ['.ts', '.js'] },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
    },
  },
  {
    // The core stays free of SDKs and I/O: dependencies point inward.
    // The controller's core too: it reconciles through ports (the Kubernetes client will be an adapter).
    files: ['src/domain/**/*.ts', 'src/ports/**/*.ts', 'src/services/**/*.ts', 'src/controller/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: SDKS, message: 'the core imports ports, not SDKs' },
            {
              regex: '(^|/)(adapters|transport|bin|inference|config|controller)/',
              message: 'the core (domain, ports, services, the controller) imports domain and ports only: dependencies point inward',
            },
          ],
        },
      ],
    },
  },
  {
    // An adapter wraps one technology and does not reach into another's folder: what two share
    // lives beside them (adapters/sql, adapters/embedding-space.ts) or in a port.
    files: ['src/adapters/*/**/*.ts'],
    ignores: ['**/*.spec.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '^\\.\\./(embedded|postgres|milvus|s3|image-source)/', message: 'adapters do not import each other: share through adapters/sql, a port or the domain' },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.spec.ts', 'test/**/*.ts', 'e2e/**/*.ts', 'bench/**/*.ts', 'scripts/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
  { files: ['eslint.config.js', '**/*.mjs'], ...tseslint.configs.disableTypeChecked },
);
